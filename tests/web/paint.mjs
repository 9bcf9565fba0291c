// How fast a run's page paints in headless Chromium: node paint.mjs BASE_URL RUN_ID [RUNS]
//
// Opens the run's page RUNS times (default 3) and prints one JSON line: for each visit, the ms
// from navigation until the run's summary is drawn (`first_ms`), until its first page of
// subtasks is (`first_page_ms`, with `first_subtasks` of them), until every subtask is loaded
// and drawn (`subtasks_ms`), and until the timeline has drawn every bar (`timeline_ms`). A
// measurement (scripts/bench-web), not a test.
import { launch } from "./browser.mjs";

const [base, runId, times] = process.argv.slice(2);
const browser = await launch();
try {
  const visits = [];
  for (let i = 0; i < Number(times || 3); i++) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(120000);
    await page.goto(`${base}/#/runs/${encodeURIComponent(runId)}`);
    const at = (condition) => page.waitForFunction(condition, null, { polling: "raf" }).then(() => page.evaluate(() => performance.now()));
    const first_ms = await at(() => document.querySelector("#run .summary") !== null);
    const first_page_ms = await at(() => Number(document.querySelector("#run")?.dataset.loaded) > 0);
    const shown = await page.$eval("#run", r => ({ loaded: Number(r.dataset.loaded), loading: r.dataset.loading }));
    const subtasks_ms = await at(() => document.querySelector('#run[data-loading="false"]') !== null);
    const timeline_ms = await at(() => {
      const c = document.querySelector("#timeline-canvas");
      const r = document.querySelector("#run");
      return c && r && Number(c.dataset.bars) >= Number(r.dataset.loaded);
    });
    const loaded = await page.$eval("#run", r => Number(r.dataset.loaded));
    visits.push({ first_ms: Math.round(first_ms), first_page_ms: Math.round(first_page_ms), first_subtasks: shown.loaded, subtasks_ms: Math.round(subtasks_ms),
      timeline_ms: Math.round(timeline_ms), subtasks: loaded });
    await page.close();
  }
  console.log(JSON.stringify({ run_id: runId, visits }));
} finally {
  await browser.close();
}
