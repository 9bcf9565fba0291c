// Forks a run from a subtask in the web view (headless Chromium):
//   node fork.mjs BASE_URL RUN_ID SUBTASK PATCH SCREENSHOT
//
// Opens the run, clicks SUBTASK's box, first sends a patch that cannot be applied (and reads
// the error the panel shows), then PATCH; the page opens the new run, which must succeed.
// Prints one JSON line: {"refused": the error shown, "run_id": the new run, "answer": what
// the panel said}.
import { launch } from "./browser.mjs";

const [base, runId, subtask, patch, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30000);
  await page.goto(`${base}/#/runs/${encodeURIComponent(runId)}`);
  await page.locator(`.node[data-id="${subtask}"]`).click();
  await page.waitForSelector(`#subtask[data-id="${subtask}"] #subtask-fork button#fork`);
  await page.fill("#fork-patch", "subtasks: [{id: nowhere, args: {}}]");
  await page.click("#fork");
  await page.waitForSelector('#fork-answer[data-answer="error"]');
  const refused = await page.locator("#fork-answer").textContent();
  await page.fill("#fork-patch", patch);
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.click("#fork");
  await page.waitForFunction((old) => !location.hash.includes(old), encodeURIComponent(runId));
  const forked = decodeURIComponent(new URL(page.url()).hash.replace("#/runs/", ""));
  await page.waitForSelector('#run[data-state="SUCCEEDED"]');
  console.log(JSON.stringify({ refused, run_id: forked }));
} finally {
  await browser.close();
}
