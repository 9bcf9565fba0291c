// The operator pages in headless Chromium: node operator.mjs BASE_URL RUNS_JSON SHOTS_DIR
//
// RUNS_JSON names three ended runs: {"retry": id, "agent": id, "big": id}. Filters the runs
// table, reads the workers table, opens each run's timeline and a subtask's panel, takes a
// screenshot of each page into SHOTS_DIR (the docs show them) and prints one JSON line of what
// it saw.
import { launch } from "./browser.mjs";

const [base, runsJson, shots] = process.argv.slice(2);
const runs = JSON.parse(runsJson);
const browser = await launch();
const rows = (page) => page.$$eval("#runs tr[data-run]", trs => trs.map(t => ({ name: t.children[1].textContent, state: t.dataset.state, age: t.querySelector(".age").textContent })));
const canvasInfo = (page) => page.$eval("#timeline-canvas", c => ({ ...c.dataset }));
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(60000);
  const report = {};

  await page.goto(`${base}/#/`);
  await page.locator("#runs tr[data-run]").first().waitFor();
  await page.fill("#filter-name", "ops-");
  await page.waitForFunction(() => { const t = [...document.querySelectorAll("#runs tr[data-run]")]; return t.length === 3 && t.every(r => r.children[1].textContent.startsWith("ops-")); });
  report.named = await rows(page);
  await page.selectOption("#filter-state", "FAILED");
  await page.waitForSelector('#runs[data-count="0"]');
  await page.selectOption("#filter-state", "SUCCEEDED");
  await page.waitForFunction(() => document.querySelectorAll("#runs tr[data-run]").length === 3);
  report.succeeded = await rows(page);
  report.workers = await page.$$eval("#workers tr[data-worker]", trs => trs.map(t => ({ labels: t.querySelector(".labels").textContent, heard: t.querySelector(".heard").textContent, state: t.querySelector(".state").textContent })));
  await page.screenshot({ path: `${shots}/web-runs.png`, fullPage: true });

  await page.goto(`${base}/#/runs/${encodeURIComponent(runs.retry)}`);
  await page.waitForFunction(() => { const c = document.querySelector("#timeline-canvas"); return c && Number(c.dataset.bars) >= 4; });
  report.retryTimeline = await canvasInfo(page);
  await page.locator('.node[data-id="flaky"]').click();
  await page.waitForSelector('#subtask[data-id="flaky"] dl');
  report.flaky = {
    text: await page.locator("#subtask dl").textContent(),
    spec: await page.locator("#subtask-spec pre").textContent(),
    output: await page.locator("#subtask-output pre").textContent(),
  };
  await page.screenshot({ path: `${shots}/web-timeline.png`, fullPage: true });
  await page.locator('.node[data-id="join"]').click();
  await page.waitForSelector('#subtask[data-id="join"] #subtask-artifacts a');
  report.join = {
    artifacts: await page.locator("#subtask-artifacts").textContent(),
    ...(await page.$eval("#subtask-artifacts a", async a => {
      const r = await fetch(a.href);
      return { download: await r.text(), disposition: r.headers.get("content-disposition") || "" };
    })),
  };

  await page.goto(`${base}/#/runs/${encodeURIComponent(runs.agent)}`);
  await page.locator('.node[data-id="writer"]').click();
  await page.waitForSelector("#transcript .msg");
  report.transcript = await page.locator("#transcript").textContent();
  await page.screenshot({ path: `${shots}/web-subtask.png`, fullPage: true });

  await page.goto(`${base}/#/runs/${encodeURIComponent(runs.big)}`);
  await page.waitForFunction(() => { const c = document.querySelector("#timeline-canvas"); return c && Number(c.dataset.bars) >= 10000; });
  report.bigTimeline = await canvasInfo(page);
  for (let i = 0; i < 4; i++) await page.click("#zoom-in");
  report.bigZoomed = await canvasInfo(page);
  await page.screenshot({ path: `${shots}/web-timeline-10k.png` });
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
