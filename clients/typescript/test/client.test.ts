// The client against a real `swarm up`: every call, its errors by field, and a watch that
// resumes through a cut connection.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { Client, FailedPrecondition, InvalidSpec, NotFound, type RunEvent } from "../src/index.js";
import { Up } from "./harness.js";

// Three turns that each sleep, a question the test answers, then the answer.
const SCRIPT = `agents:
  talker:
    - repeat: 3
      content: "checking the next part"
      tool_calls: [{name: sleep, arguments: {ms: 200}}]
    - content: "asking"
      tool_calls: [{name: request_approval, arguments: {question: "go on?"}}]
    - content: "all parts checked"
`;

let up: Up;
let client: Client;
const scriptDir = mkdtempSync(path.join(tmpdir(), "swarm-ts-script-"));

before(async () => {
  const script = path.join(scriptDir, "script.yaml");
  writeFileSync(script, SCRIPT);
  up = await Up.start(["--script", script]);
  client = new Client(up.url);
});
after(async () => {
  client?.close();
  await up?.close();
  rmSync(scriptDir, { recursive: true, force: true });
});

const chain = (name: string, texts: string[]) => ({
  name,
  subtasks: texts.map((text, i) => ({
    id: `s${i}`,
    tool: "echo",
    args: { text },
    ...(i > 0 ? { depends_on: [`s${i - 1}`] } : {}),
  })),
});

async function collect(events: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const ev of events) out.push(ev);
  return out;
}

test("a run submitted as an object is watched to its end and read back with its outputs", async () => {
  const run = await client.submit(chain("ts-object", ["one", "two", "three"]));
  assert.equal(run.created, true);
  const events = await collect(run.watch());
  const seqs = events.map((e) => Number(e.seq));
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every event once, in order, from 1");
  assert.equal(events.at(-1)?.event, "runFinished");
  assert.equal(events.filter((e) => e.event === "subtaskSucceeded").length, 3);
  const got = await run.get({ subtasks: true });
  assert.equal(got.state, "SUCCEEDED");
  assert.equal(got.succeeded, true);
  assert.deepEqual(
    got.subtasks.map((s) => [s.id, s.state, s.output]),
    [["s0", "SUCCEEDED", { text: "one" }], ["s1", "SUCCEEDED", { text: "two" }], ["s2", "SUCCEEDED", { text: "three" }]],
  );
  assert.equal(got.summary?.toolCallsCompleted, 3);
  const listed = await client.list({ limit: 100 });
  assert.ok(listed.some((r) => r.runId === run.runId && r.state === "SUCCEEDED"));
});

test("YAML text and a YAML file are submitted as the CLI reads them (YAML 1.2: `y` is a string)", async () => {
  const yaml = "name: ts-yaml\nsubtasks:\n  - id: a\n    tool: echo\n    args: {text: y}\n";
  const fromText = await (await client.submit(yaml)).wait();
  assert.equal(fromText.state, "SUCCEEDED");
  const file = up.file("spec.yaml", yaml.replace("ts-yaml", "ts-file"));
  const run = await client.submitFile(file);
  const done = await run.wait();
  assert.equal(done.name, "ts-file");
  assert.deepEqual((await run.get({ subtasks: true })).subtasks[0].output, { text: "y" });
});

test("every problem of a bad spec comes back at once, each with its field", async () => {
  const bad = {
    name: "ts-bad",
    subtasks: [
      { id: "a", tool: "echo", args: { text: "x" }, depends_on: ["nowhere"] },
      { id: "a", tool: "echo", args: { text: "y" } },
      { id: "b", tool: "echo", args: { text: "z" }, retry: { maximum_attempts: 99999 } },
    ],
  };
  await assert.rejects(client.submit(bad), (e: unknown) => {
    assert.ok(e instanceof InvalidSpec, String(e));
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    const fields = e.violations.map((v) => v.field);
    assert.ok(fields.includes("subtasks[0].depends_on[0]"), JSON.stringify(e.violations));
    assert.ok(fields.includes("subtasks[1].id"), JSON.stringify(e.violations));
    assert.ok(fields.includes("subtasks[2].retry.maximum_attempts"), JSON.stringify(e.violations));
    return true;
  });
  await assert.rejects(client.submit("subtasks: [unclosed"), InvalidSpec);
  const listed = await client.list({ limit: 1000 });
  assert.ok(!listed.some((r) => r.name === "ts-bad"), "nothing of a refused spec is stored");
});

test("unknown runs are NOT_FOUND; a reused key names its run, or is refused with another spec", async () => {
  await assert.rejects(client.get("r-000000000000-nope"), NotFound);
  await assert.rejects(client.cancel("r-000000000000-nope"), NotFound);
  const first = await client.submit(chain("ts-keyed", ["k"]), { idempotencyKey: "ts-key-1" });
  const again = await client.submit(chain("ts-keyed", ["k"]), { idempotencyKey: "ts-key-1" });
  assert.equal(again.runId, first.runId);
  assert.equal(again.created, false);
  await assert.rejects(client.submit(chain("ts-keyed", ["other"]), { idempotencyKey: "ts-key-1" }), FailedPrecondition);
  await first.wait();
});

test("a running run is cancelled and reads CANCELLED", async () => {
  const run = await client.submit({ name: "ts-cancel", subtasks: [{ id: "long", tool: "sleep", args: { ms: 60000 } }] });
  for await (const ev of run.watch()) {
    if (ev.event === "subtaskStarted") break;
  }
  const cancelled = await run.cancel("enough");
  assert.ok(["CANCELLED", "RUNNING"].includes(cancelled.state), cancelled.state);
  const done = await run.wait();
  assert.equal(done.state, "CANCELLED");
  assert.equal(done.ended, true);
});

test("an agent's live output streams while it runs, and its question is approved", async () => {
  const run = await client.submit({
    name: "ts-agent",
    subtasks: [{ id: "talker", agent: { model: "scripted", input: "check", tools: ["sleep", "request_approval"] } }],
  });
  const texts: string[] = [];
  let approved = false;
  for await (const ev of client.watch(run.runId, { followOutput: true })) {
    if (ev.event === "agentOutput") texts.push(ev.agentOutput!.text);
    if (ev.event === "approvalRequested" && !approved) {
      // Not waiting yet on another subtask: refused by name.
      await assert.rejects(client.approve(run.runId, "nobody"), (e: unknown) => e instanceof NotFound || e instanceof InvalidSpec || e instanceof FailedPrecondition);
      const answer = await client.approve(run.runId, ev.approvalRequested!.subtaskId, { by: "ts" }, "fine");
      assert.equal(answer.alreadyDecided, false);
      approved = true;
    }
  }
  assert.ok(approved, "the agent asked");
  assert.ok(texts.join("").includes("checking the next part"), JSON.stringify(texts));
  const done = await run.get({ subtasks: true });
  assert.equal(done.state, "SUCCEEDED", up.logs());
});

test("fork reuses what is upstream, runs the rest with the patch, and refuses by field", async () => {
  const base = await client.submit(chain("ts-fork", ["a", "b", "c"]));
  await base.wait();
  const forked = await client.fork(base.runId, "s1", { patch: { subtasks: [{ id: "s1", args: { text: "B" } }] } });
  const done = await forked.wait();
  assert.equal(done.state, "SUCCEEDED");
  assert.equal(done.summary?.callsReused, 1);
  assert.equal(done.summary?.callsMade, 2);
  const got = await forked.get({ subtasks: true });
  assert.equal(got.forkedFrom, base.runId);
  assert.deepEqual(got.subtasks.map((s) => s.output), [{ text: "a" }, { text: "B" }, { text: "c" }]);
  assert.equal(got.subtasks[0].reusedFrom, base.runId);
  await assert.rejects(client.fork(base.runId, "s9"), NotFound);
  await assert.rejects(client.fork(base.runId, "s1", { patch: "subtasks: [{id: s0, depends_on: [s2]}]" }), (e: unknown) => {
    assert.ok(e instanceof InvalidSpec, String(e));
    assert.ok(e.violations.some((v) => v.description.includes("cycle")), JSON.stringify(e.violations));
    return true;
  });
});

test("a watch cut mid-run resumes where it broke: no event missing, none twice", async () => {
  // A TCP proxy in front of the coordinator that drops every connection once, mid-run.
  const sockets = new Set<Socket>();
  const [host, port] = up.url.replace("http://", "").split(":");
  const proxy = createServer((down) => {
    const upstream = connect(Number(port), host);
    sockets.add(down).add(upstream);
    down.pipe(upstream).pipe(down);
    const drop = () => (down.destroy(), upstream.destroy(), sockets.delete(down), sockets.delete(upstream));
    down.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", () => r()));
  const via = new Client(`http://127.0.0.1:${(proxy.address() as { port: number }).port}`);
  try {
    const spec = {
      name: "ts-cut",
      subtasks: Array.from({ length: 12 }, (_, i) => ({
        id: `t${i}`,
        tool: "sleep",
        args: { ms: 100 },
        ...(i > 0 ? { depends_on: [`t${i - 1}`] } : {}),
      })),
    };
    const run = await via.submit(spec);
    const seqs: number[] = [];
    let cut = false;
    for await (const ev of run.watch()) {
      seqs.push(Number(ev.seq));
      if (!cut && ev.event === "subtaskSucceeded" && seqs.length > 6) {
        for (const s of sockets) s.destroy();
        cut = true;
      }
    }
    assert.ok(cut);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every event once, in order");
    assert.equal((await via.get(run.runId)).state, "SUCCEEDED");
  } finally {
    via.close();
    proxy.close();
  }
});
