// The checked-in protos and their generated types are what ./generate makes of ../../proto now.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function files(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p, base) : [path.relative(base, p)];
  });
}

test("proto/ and src/proto/ are what ./generate produces from the repository's protos", () => {
  const out = mkdtempSync(path.join(tmpdir(), "swarm-ts-generate-"));
  try {
    execFileSync(path.join(PKG, "generate"), [out], { stdio: "pipe" });
    for (const sub of ["proto", "src/proto"]) {
      const want = files(path.join(out, sub)).sort();
      assert.deepEqual(files(path.join(PKG, sub)).sort(), want, `${sub}: run ./generate`);
      for (const f of want) {
        const fresh = readFileSync(path.join(out, sub, f), "utf8");
        const kept = readFileSync(path.join(PKG, sub, f), "utf8");
        assert.equal(kept, fresh, `${sub}/${f} differs from what ./generate makes: run ./generate`);
      }
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
