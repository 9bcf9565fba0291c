// What the tests run against: a real `swarm up`, and a real cluster (etcd, two coordinators, a
// worker), every process on free loopback ports and stopped by its PID when the test ends.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client, type ClientOptions } from "../src/index.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

export function swarmBin(): string {
  return process.env.SWARM_BIN || path.join(ROOT, "target/debug/swarm");
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const live = new Set<ChildProcess>();
// A test that throws still leaves no process behind.
process.on("exit", () => {
  for (const p of live) p.kill("SIGKILL");
});

/** A process of ours, logging to `log`. */
function start(args: string[], log: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
  const fd = openSync(log, "a");
  const p = spawn(args[0], args.slice(1), { stdio: ["ignore", fd, fd], env: { ...process.env, ...env } });
  live.add(p);
  p.once("exit", () => live.delete(p));
  return p;
}

/** Stops a process by its PID: SIGTERM, SIGKILL after 15 s. */
export async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => p.once("exit", () => resolve()));
  p.kill("SIGTERM");
  const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(t);
}

/** Polls `ready` until it holds (or 60 s pass, or a process exits). */
async function until(what: string, procs: ChildProcess[], ready: () => Promise<boolean>, logs: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    for (const p of procs) {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`${what}: a process exited\n${logs()}`);
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within 60 s\n${logs()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function serving(url: string, workers: number, options: ClientOptions = {}): Promise<boolean> {
  const c = new Client(url, { ...options, timeoutMs: 2000 });
  try {
    return (await c.workers()).length >= workers;
  } finally {
    c.close();
  }
}

/** A `swarm up` (memory store, in-process workers). */
export class Up {
  readonly dir = mkdtempSync(path.join(tmpdir(), "swarm-ts-up-"));
  proc!: ChildProcess;
  url = "";

  static async start(extra: string[] = [], options: { workers?: number; scheme?: string; client?: ClientOptions } = {}): Promise<Up> {
    const up = new Up();
    const port = await freePort();
    const workers = options.workers ?? 2;
    up.url = `${options.scheme ?? "http"}://127.0.0.1:${port}`;
    up.proc = start(
      [swarmBin(), "up", "--listen", `127.0.0.1:${port}`, "--workers", String(workers), "--slots", "8", ...extra],
      path.join(up.dir, "up.log"),
    );
    await until("swarm up", [up.proc], () => serving(up.url, workers, options.client), () => up.logs());
    return up;
  }

  file(name: string, text: string): string {
    const p = path.join(this.dir, name);
    writeFileSync(p, text);
    return p;
  }

  logs(): string {
    return readFileSync(path.join(this.dir, "up.log"), "utf8").slice(-4000);
  }

  async close(): Promise<void> {
    await stop(this.proc);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** etcd, two `swarm coordinator`s (one leads, one stands by and forwards) and one `swarm worker`. */
export class ProcCluster {
  readonly dir = mkdtempSync(path.join(tmpdir(), "swarm-ts-cluster-"));
  etcd!: ChildProcess;
  coordinators: { proc: ChildProcess; url: string }[] = [];
  worker!: ChildProcess;

  static async start(): Promise<ProcCluster> {
    const c = new ProcCluster();
    const [client, peer] = [await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${client}`;
    c.etcd = start(
      [
        process.env.ETCD_BIN || "/usr/bin/etcd",
        "--name", "c0", "--data-dir", path.join(c.dir, "etcd"),
        "--listen-client-urls", etcdUrl, "--advertise-client-urls", etcdUrl,
        "--listen-peer-urls", `http://127.0.0.1:${peer}`,
        "--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`,
        "--initial-cluster", `c0=http://127.0.0.1:${peer}`, "--log-level", "error",
      ],
      path.join(c.dir, "etcd.log"),
    );
    const common = ["--etcd", etcdUrl, "--lease-ttl", "2s", "--payloads", path.join(c.dir, "payloads")];
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const proc = start(
        [swarmBin(), "coordinator", "--listen", `127.0.0.1:${port}`, "--advertise", url, ...common],
        path.join(c.dir, `coordinator-${i}.log`),
      );
      c.coordinators.push({ proc, url });
      if (i === 0) await until("the first coordinator", [c.etcd, proc], () => serving(url, 0), () => c.logs());
    }
    c.worker = start(
      [swarmBin(), "worker", "--id", "w0", "--slots", "16", "--etcd", etcdUrl, "--lease-ttl", "2s"],
      path.join(c.dir, "worker.log"),
    );
    for (const { url } of c.coordinators) {
      await until(`${url} with the worker`, [c.etcd, c.worker], () => serving(url, 1), () => c.logs());
    }
    return c;
  }

  logs(): string {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith(".log"))
      .sort()
      .map((f) => `--- ${f}\n${readFileSync(path.join(this.dir, f), "utf8").slice(-3000)}`)
      .join("\n");
  }

  async close(): Promise<void> {
    for (const p of [...this.coordinators.map((c) => c.proc), this.worker, this.etcd]) {
      if (p) await stop(p);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
