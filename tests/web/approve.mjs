// Decides an approval in the web view (headless Chromium): node approve.mjs BASE_URL RUN_ID SUBTASK SCREENSHOT
//
// Opens the run's page, waits for SUBTASK among the approvals waiting for a decision, takes a
// screenshot, clicks "approve", waits for the run to succeed and prints one JSON line:
//   {"prompt": the prompt shown, "status": the HTTP status of the decision, "answer": its body}
import { launch } from "./browser.mjs";

const [base, runId, subtask, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30000);
  await page.goto(`${base}/#/runs/${encodeURIComponent(runId)}`);
  const row = page.locator(`#approvals .approval[data-id="${subtask}"]`);
  await row.waitFor();
  const prompt = await row.locator(".prompt").textContent();
  await page.screenshot({ path: screenshot, fullPage: true });
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/signal")),
    row.locator('button[data-decision="approve"]').click(),
  ]);
  const answer = await response.json();
  await page.waitForSelector('#run[data-state="SUCCEEDED"]');
  console.log(JSON.stringify({ prompt, status: response.status(), answer }));
} finally {
  await browser.close();
}
