// Drives the web view in Debian's headless Chromium: node view.mjs BASE_URL NODE_ID SCREENSHOT
//
// 1. opens the runs page and prints READY (the test then submits a run);
// 2. waits for a RUNNING run to appear in the list, and opens it;
// 3. waits for node NODE_ID to show RUNNING, then SUCCEEDED, without a reload (live updates);
// 4. waits for the run to end, takes a screenshot, and prints one JSON line:
//    {"run_id", "critical": [ids marked on the critical path], "states": {id: state}, "workers": n}
import { launch } from "./browser.mjs";

const [base, nodeId, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30000);
  await page.goto(`${base}/`);
  await page.waitForSelector("#workers tr[data-worker]");
  const workers = await page.locator("#workers tr[data-worker]").count();
  console.log("READY");

  const row = page.locator('#runs tr[data-state="RUNNING"]').first();
  await row.waitFor();
  const runId = await row.getAttribute("data-run");
  await row.locator("a").click();
  await page.waitForSelector("#dag");
  await page.evaluate(() => { window.__sameDocument = true; });

  const node = `#dag [data-id="${nodeId}"]`;
  await page.waitForSelector(`${node}[data-state="RUNNING"]`);
  await page.waitForSelector(`${node}[data-state="SUCCEEDED"]`);
  await page.waitForSelector('#run[data-state="SUCCEEDED"]');
  await page.waitForSelector('#dag [data-critical="true"]');
  const live = await page.evaluate(() => window.__sameDocument === true);
  if (!live) throw new Error("the page reloaded instead of updating live");

  const critical = await page.$$eval('#dag [data-critical="true"]', (els) => els.map((e) => e.dataset.id));
  const states = await page.$$eval("#dag [data-id]", (els) => Object.fromEntries(els.map((e) => [e.dataset.id, e.dataset.state])));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ run_id: runId, critical, states, workers }));
} finally {
  await browser.close();
}
