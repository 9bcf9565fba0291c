// The README's TypeScript lines, as written: the package installed from the repository path
// into a project of its own, the script run by Node against a real `swarm up`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { ROOT, Up } from "./harness.js";

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let up: Up;
before(async () => {
  up = await Up.start();
});
after(async () => {
  await up?.close();
});

test("the README's script runs as written from a project that installed the package by path", () => {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("### From TypeScript"));
  const script = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(script, "the README has the script");
  const project = mkdtempSync(path.join(tmpdir(), "swarm-ts-readme-"));
  try {
    writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "readme-check", private: true, type: "module" }));
    // As a user installs it (npm 9 packs the folder and fetches its dependencies from the
    // registry; later npm links it); dist/ is built already, so no scripts.
    execFileSync("npm", ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", PKG], { cwd: project, stdio: "pipe" });
    writeFileSync(path.join(project, "progress.mjs"), script.replace("http://127.0.0.1:7070", up.url));
    const out = execFileSync(process.execPath, ["progress.mjs"], { cwd: project, encoding: "utf8", timeout: 60_000 });
    const lines = out.trim().split("\n");
    assert.match(lines[0], /^1 runStarted/);
    assert.ok(lines.some((l) => l === "9 subtaskSucceeded merge"), out);
    assert.equal(lines.at(-1), "SUCCEEDED 4 calls", out);
  } finally {
    rmSync(project, { recursive: true, force: true });
  }
});
