// Watches an agent's live output in the web view (headless Chromium):
//   node output.mjs BASE_URL RUN_ID SUBTASK SCREENSHOT
//
// Opens the run's page while the run goes on, clicks SUBTASK's box, waits until its output
// panel has grown past two finished tool calls (taking a screenshot then), approves the question
// the agent then waits on, waits for the run to end, and prints one JSON line: {"early": the panel's text then, "final": its text at the end}.
import { launch } from "./browser.mjs";

const [base, runId, subtask, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30000);
  await page.goto(`${base}/#/runs/${encodeURIComponent(runId)}`);
  await page.locator(`.node[data-id="${subtask}"]`).click();
  try {
    await page.waitForFunction(() => {
      const pre = document.querySelector("#output pre");
      return pre && (pre.textContent.match(/← sleep ok/g) || []).length >= 2;
    }, null, { timeout: 60000 });
  } catch (e) {
    // Say what the page showed, so a failure can be told apart.
    const seen = await page.evaluate(() => ({
      state: document.querySelector("#run")?.getAttribute("data-state"),
      panel: document.querySelector("#output")?.outerHTML?.slice(0, 2000),
      body: document.body.innerText.slice(0, 2000),
    }));
    console.error(JSON.stringify(seen));
    throw e;
  }
  const early = await page.locator("#output pre").textContent();
  await page.screenshot({ path: screenshot, fullPage: true });
  // The agent waits for a person after three calls: once the page shows it asking, answer it,
  // as the page's button does.
  await page.waitForSelector(`#approvals .approval[data-id="${subtask}"]`);
  const answered = await page.evaluate(async ([runId, subtask]) => {
    const r = await fetch(`/api/runs/${encodeURIComponent(runId)}/signal`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-swarm-request": "1" },
      body: JSON.stringify({ subtask_id: subtask, decision: "approve" }),
    });
    return r.status;
  }, [runId, subtask]);
  if (answered !== 200) throw new Error(`the approval was answered ${answered}`);
  await page.waitForSelector('#run[data-state="SUCCEEDED"]');
  const final = await page.locator("#output pre").textContent();
  console.log(JSON.stringify({ early, final }));
} finally {
  await browser.close();
}
