// A watch through a coordinator that is SIGKILLed mid-run: the client, given both
// coordinators, goes on with the other one and misses no event, sees none twice.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "../src/index.js";
import { ProcCluster } from "./harness.js";

let cluster: ProcCluster;
before(async () => {
  cluster = await ProcCluster.start();
});
after(async () => {
  await cluster?.close();
});

test("a watch goes on through a coordinator SIGKILL: every event once, the run whole", async () => {
  const [first, second] = cluster.coordinators;
  // Through the first coordinator (whichever leads), with the second to fall back on.
  const client = new Client([first.url, second.url]);
  try {
    const subtasks = [];
    for (let c = 0; c < 4; c++) {
      for (let s = 0; s < 8; s++) {
        subtasks.push({ id: `c${c}-${s}`, tool: "sleep", args: { ms: 150 }, ...(s > 0 ? { depends_on: [`c${c}-${s - 1}`] } : {}) });
      }
    }
    const run = await client.submit({ name: "ts-failover", subtasks });
    const seqs: number[] = [];
    let succeeded = 0;
    let killed = false;
    for await (const ev of run.watch()) {
      seqs.push(Number(ev.seq));
      if (ev.event === "subtaskSucceeded") succeeded++;
      if (!killed && succeeded >= 8) {
        first.proc.kill("SIGKILL");
        killed = true;
      }
    }
    assert.ok(killed, "the coordinator was killed mid-run");
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `every event once, in order\n${cluster.logs()}`);
    assert.equal(succeeded, 32, cluster.logs());
    assert.equal(client.target, second.url, "the client went on with the other coordinator");
    const done = await client.get(run.runId, { subtasks: true });
    assert.equal(done.state, "SUCCEEDED", cluster.logs());
    assert.equal(done.summary?.toolCallsCompleted, 32);
  } finally {
    client.close();
  }
});
