// Acting in the web view by role (headless Chromium):
//   node acts.mjs BASE_URL RUN_ID READER_TOKEN OPERATOR_TOKEN ADMIN_TOKEN SCREENSHOT_DIR
//
// As the reader (role read): the running run shows no cancel button, its waiting approval no
// decision buttons, the subtask panel no fork form; a cancel sent from the page anyway is
// refused. As the operator (read, cancel, approve, submit): both buttons show; "cancel run"
// (confirmed) cancels it. As the admin: the list filtered by tenant, spec version and state.
// Screenshots: web-reader.png, web-operator.png, web-filters.png. Prints one JSON line.
import { launch } from "./browser.mjs";

const [base, runId, reader, operator, admin, dir] = process.argv.slice(2);
const browser = await launch();
const as = async (token) => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  await context.addCookies([{ name: "swarm_token", value: encodeURIComponent(token), url: base }]);
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on("dialog", (d) => d.accept());
  return page;
};
const runPage = async (page) => {
  await page.goto(`${base}/#/runs/${encodeURIComponent(runId)}`);
  await page.waitForSelector('#run[data-state="RUNNING"] #approvals .approval');
};
const count = (page, selector) => page.locator(selector).count();
try {
  const out = {};

  const r = await as(reader);
  await runPage(r);
  await r.locator('.node[data-id="slow"]').click();
  await r.waitForSelector('#subtask[data-id="slow"]');
  out.reader = {
    cancel_buttons: await count(r, "#cancel-run"),
    decision_buttons: await count(r, "#approvals button"),
    fork_forms: await count(r, "#subtask-fork"),
    // What a page could still send: refused by the API's roles.
    cancel_status: await r.evaluate(async (id) => (await fetch(`/api/runs/${encodeURIComponent(id)}/cancel`, {
      method: "POST", headers: { "content-type": "application/json", "x-swarm-request": "1" }, body: "{}" })).status, runId),
    me: await r.evaluate(async () => (await fetch("/api/me")).json()),
  };
  await r.screenshot({ path: `${dir}/web-reader.png`, fullPage: true });

  const o = await as(operator);
  await runPage(o);
  await o.locator('.node[data-id="slow"]').click();
  await o.waitForSelector('#subtask[data-id="slow"] #subtask-fork');
  out.operator = {
    cancel_buttons: await count(o, "#cancel-run"),
    decision_buttons: await count(o, "#approvals button"),
    fork_forms: await count(o, "#subtask-fork"),
  };
  await o.screenshot({ path: `${dir}/web-operator.png`, fullPage: true });
  await o.click("#cancel-run");
  await o.waitForSelector('#run[data-state="CANCELLED"]');
  out.operator.state = await o.locator("#run").getAttribute("data-state");
  out.operator.slow = await o.locator('.node[data-id="slow"]').getAttribute("data-state");

  // The list as the admin, filtered: each filter waits until every row shown matches it.
  const a = await as(admin);
  await a.goto(`${base}/#/`);
  await a.waitForSelector("#runs tr[data-run]");
  const rows = () => a.$$eval("#runs tr[data-run]", (trs) => trs.map((tr) => tr.dataset.run));
  // (Playwright sends each predicate's source to the page: no eval of our own.)
  const settle = (pred, arg) => a.waitForFunction(pred, arg);
  await a.fill("#filter-tenant", "beta");
  await settle((t) => {
    const trs = [...document.querySelectorAll("#runs tr[data-run]")];
    return trs.length > 0 && trs.every((tr) => tr.querySelector(".tenant").textContent === t);
  }, "beta");
  out.filters = { beta: await rows() };
  await a.fill("#filter-tenant", "acme");
  await a.fill("#filter-version", "v2");
  await settle((v) => {
    const trs = [...document.querySelectorAll("#runs tr[data-run]")];
    return trs.length > 0 && trs.every((tr) => tr.querySelector(".tenant").textContent === "acme"
      && tr.querySelector(".version").textContent === v);
  }, "v2");
  out.filters.acme_v2 = await rows();
  await a.fill("#filter-version", "");
  await a.selectOption("#filter-state", "CANCELLED");
  await settle((st) => {
    const trs = [...document.querySelectorAll("#runs tr[data-run]")];
    return trs.length > 0 && trs.every((tr) => tr.dataset.state === st && tr.querySelector(".tenant").textContent === "acme");
  }, "CANCELLED");
  out.filters.acme_cancelled = await rows();
  await a.screenshot({ path: `${dir}/web-filters.png`, fullPage: true });
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
