// TLS, mTLS and tokens: a `swarm up` with a private CA (`swarm certs`), client certificates
// required, and principals with roles (docs/security.md).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { Client, PermissionDenied, Unauthenticated, Unavailable } from "../src/index.js";
import { swarmBin, Up } from "./harness.js";

const dir = mkdtempSync(path.join(tmpdir(), "swarm-ts-tls-"));
const SUBMITTER = "ts-submitter-token";
const READER = "ts-reader-token";
const sha = (t: string) => createHash("sha256").update(t).digest("hex");
let up: Up;

before(async () => {
  execFileSync(swarmBin(), ["certs", "--dir", dir, "--client", "ts-client", "--client", "other"], { stdio: "ignore" });
  // Another CA's client certificate: refused at the handshake.
  execFileSync(swarmBin(), ["certs", "--dir", path.join(dir, "rogue"), "--client", "ts-client"], { stdio: "ignore" });
  const auth = path.join(dir, "auth.yaml");
  writeFileSync(
    auth,
    `principals:
  - {name: submitter, roles: [submit, read, cancel], token_sha256: "${sha(SUBMITTER)}"}
  - {name: reader, roles: [read], token_sha256: "${sha(READER)}"}
  - {name: by-cert, roles: [read], cert_name: ts-client}
`,
  );
  const tls = { ca: path.join(dir, "ca.pem"), cert: path.join(dir, "ts-client.pem"), key: path.join(dir, "ts-client.key") };
  up = await Up.start(
    [
      "--tls-cert", path.join(dir, "server.pem"), "--tls-key", path.join(dir, "server.key"),
      "--tls-client-ca", path.join(dir, "ca.pem"), "--auth-file", auth,
    ],
    { scheme: "https", client: { ...tls, token: READER } },
  );
});
after(async () => {
  await up?.close();
  rmSync(dir, { recursive: true, force: true });
});

const mtls = () => ({ ca: path.join(dir, "ca.pem"), cert: path.join(dir, "ts-client.pem"), key: path.join(dir, "ts-client.key") });

test("over mTLS a token's roles decide: the submitter submits, the reader reads and is refused a submit", async () => {
  const submitter = new Client(up.url, { ...mtls(), token: SUBMITTER });
  const reader = new Client(up.url, { ...mtls(), token: READER });
  try {
    const run = await submitter.submit({ name: "ts-tls", subtasks: [{ id: "a", tool: "echo", args: { text: "secure" } }] });
    assert.equal((await run.wait()).state, "SUCCEEDED");
    assert.equal((await reader.get(run.runId)).state, "SUCCEEDED");
    await assert.rejects(reader.submit({ name: "ts-no", subtasks: [{ id: "a", tool: "echo", args: {} }] }), PermissionDenied);
    await assert.rejects(reader.cancel(run.runId), PermissionDenied);
  } finally {
    submitter.close();
    reader.close();
  }
});

test("a certificate alone stands for its principal; an unknown token is refused; PEM text works as paths do", async () => {
  const byCert = new Client(up.url, {
    ca: readFileSync(path.join(dir, "ca.pem"), "utf8"),
    cert: readFileSync(path.join(dir, "ts-client.pem")),
    key: readFileSync(path.join(dir, "ts-client.key")),
  });
  const forged = new Client(up.url, { ...mtls(), token: "not-a-token" });
  try {
    assert.ok(Array.isArray(await byCert.list({ limit: 5 })));
    await assert.rejects(byCert.submit({ name: "x", subtasks: [{ id: "a", tool: "echo", args: {} }] }), PermissionDenied);
    await assert.rejects(forged.list(), Unauthenticated);
  } finally {
    byCert.close();
    forged.close();
  }
});

test("without a client certificate, with another CA's, or over plaintext, nothing gets through", async () => {
  const none = new Client(up.url, { ca: path.join(dir, "ca.pem"), token: READER, timeoutMs: 3000 });
  const rogue = new Client(up.url, {
    ca: path.join(dir, "ca.pem"),
    cert: path.join(dir, "rogue", "ts-client.pem"),
    key: path.join(dir, "rogue", "ts-client.key"),
    token: READER,
    timeoutMs: 3000,
  });
  const plain = new Client(up.url.replace("https://", "http://"), { token: READER, timeoutMs: 3000 });
  try {
    for (const c of [none, rogue, plain]) {
      await assert.rejects(c.list(), (e: unknown) => e instanceof Unavailable || (e as Error).name === "DeadlineExceeded", `${c.target}`);
    }
  } finally {
    none.close();
    rogue.close();
    plain.close();
  }
});
