// The client: one or more coordinator URLs, calls that follow the leader and move on to the next
// coordinator when one is gone, and watches that resume where they broke.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

import { credentials, Metadata, status as Status, type CallOptions, type ChannelCredentials, type ClientOptions as GrpcOptions } from "@grpc/grpc-js";

import { fromServiceError, SwarmError, Unavailable } from "./errors.js";
import type { AgentOutput__Output } from "./proto/swarm/v1/AgentOutput.js";
import type { Run__Output } from "./proto/swarm/v1/Run.js";
import type { RunEvent__Output } from "./proto/swarm/v1/RunEvent.js";
import type { RunSpec } from "./proto/swarm/v1/RunSpec.js";
import type { RunSummary__Output } from "./proto/swarm/v1/RunSummary.js";
import type { SignalRunResponse__Output } from "./proto/swarm/v1/SignalRunResponse.js";
import type { SwarmServiceClient } from "./proto/swarm/v1/SwarmService.js";
import type { WorkerInfo__Output } from "./proto/swarm/v1/WorkerInfo.js";
import { encodeSubmit, swarmProto } from "./wire.js";

/** A run spec: an object in the spec format (docs/run-spec.md, the CLI's YAML as an object),
 * YAML or JSON text, or a `swarm.v1.RunSpec` message (as `{ proto: … }`). */
export type Spec = Record<string, unknown> | string | { proto: RunSpec };

export interface ClientOptions {
  /** A bearer token (the coordinator's `--auth` file). */
  token?: string;
  /** For https:// targets: the CA (PEM text or a file path) and, for mTLS, the client's
   * certificate and key. */
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Deadline of each unary call, in ms (default 30 s). Watches have none. */
  timeoutMs?: number;
}

export type RunStateName = "UNSPECIFIED" | "PENDING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED" | "BUDGET_EXCEEDED";
const ENDED = new Set<RunStateName>(["SUCCEEDED", "FAILED", "CANCELLED", "BUDGET_EXCEEDED"]);

export interface SubtaskResult {
  id: string;
  state: string;
  kind: string;
  tool: string;
  attempt: number;
  workerId: string;
  /** The output, parsed (undefined if none, or kept in the payload store: see `outputRef`). */
  output: unknown;
  outputRef: string;
  error: string;
  dependsOn: string[];
  reusedFrom: string;
}

/** A run as GetRun (or a RunFinished event) reports it; `raw` is the message itself. */
export interface RunResult {
  runId: string;
  name: string;
  state: RunStateName;
  ended: boolean;
  succeeded: boolean;
  tenant: string;
  specVersion: string;
  specHash: string;
  forkedFrom: string;
  lastSeq: number;
  summary: RunSummary__Output | null;
  subtasks: SubtaskResult[];
  raw: Run__Output;
}

export interface WatchOptions {
  /** Events after this sequence number (0: from the start). */
  afterSeq?: number;
  /** Also the agents' live output (`agentOutput` events, best effort, not durable). */
  followOutput?: boolean;
  /** Ends the watch (the iterator returns). */
  signal?: AbortSignal;
}

/** Largest message sent or received. */
const MAX_MESSAGE = 64 * 1024 * 1024;
/** Largest SubmitRun the coordinator decodes; larger goes as SubmitRunChunked. */
const MAX_SUBMIT_BYTES = 16 * 1024 * 1024;
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Times a unary call moves on (a leader hint, or the next coordinator) before giving up. */
const HOPS = 6;
/** Breaks in a row (no event between) before a watch gives up. */
const MAX_RECONNECTS = 30;

const GRPC_OPTIONS: GrpcOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE,
  "grpc.max_send_message_length": MAX_MESSAGE,
  // Pings every 10 s (5 s to answer), also while only a watch is open: a link that went silent
  // (a partition, a frozen coordinator) fails, and the watch resumes elsewhere.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  // One connection per client, not shared with other clients of the same address.
  "grpc.use_local_subchannel_pool": 1,
};

interface Target {
  url: string;
  address: string;
  tls: boolean;
}

/** `http://HOST:PORT`, `https://HOST:PORT`, or `HOST:PORT` (http). */
export function parseTarget(url: string): Target {
  const full = url.includes("://") ? url : `http://${url}`;
  let u: URL;
  try {
    u = new URL(full);
  } catch {
    throw new TypeError(`not a coordinator URL: ${JSON.stringify(url)} (http://HOST:PORT or https://HOST:PORT)`);
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || !u.hostname) {
    throw new TypeError(`not a coordinator URL: ${JSON.stringify(url)} (http://HOST:PORT or https://HOST:PORT)`);
  }
  const tls = u.protocol === "https:";
  const port = u.port || (tls ? "443" : "7070");
  return { url: `${u.protocol}//${u.hostname}:${port}`, address: `${u.hostname}:${port}`, tls };
}

function pem(v: string | Buffer | undefined): Buffer | null {
  if (v === undefined) return null;
  if (Buffer.isBuffer(v)) return v;
  return v.includes("-----BEGIN") ? Buffer.from(v) : readFileSync(v);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/** 100 ms doubling to 3 s, jittered (half to whole). */
const backoff = (n: number) => Math.min(3000, 100 * 2 ** n) * (0.5 + Math.random() / 2);

function ms(d: { seconds?: number | string; nanos?: number } | null | undefined): number {
  return d ? Number(d.seconds ?? 0) * 1000 + (d.nanos ?? 0) / 1e6 : 0;
}
export { ms as durationMs };

function result(run: Run__Output): RunResult {
  const state = String(run.state).replace(/^RUN_STATE_/, "") as RunStateName;
  return {
    runId: run.runId,
    name: run.name,
    state,
    ended: ENDED.has(state),
    succeeded: state === "SUCCEEDED",
    tenant: run.tenant,
    specVersion: run.specVersion,
    specHash: run.specHash,
    forkedFrom: run.forkedFromRun,
    lastSeq: Number(run.lastSeq),
    summary: run.summary,
    subtasks: run.subtasks.map((t) => ({
      id: t.id,
      state: String(t.state).replace(/^SUBTASK_STATE_/, ""),
      kind: t.kind,
      tool: t.tool,
      attempt: t.attempt,
      workerId: t.workerId,
      output: t.outputJson ? JSON.parse(t.outputJson) : undefined,
      outputRef: t.outputRef,
      error: t.errorMessage,
      dependsOn: t.dependsOn,
      reusedFrom: t.reusedFrom,
    })),
    raw: run,
  };
}

/** A connection to a Swarm cluster: one coordinator URL, or several (any of them serves; a
 * call, or a watch, that loses one goes on with the next, and a standby that names the leader
 * is followed). */
export class Client {
  private readonly targets: Target[];
  private current = 0;
  private stub: SwarmServiceClient | undefined;
  private readonly creds: { channel: ChannelCredentials | undefined; token?: string };
  private readonly timeoutMs: number;
  private closed = false;

  constructor(targets: string | string[] = "http://127.0.0.1:7070", options: ClientOptions = {}) {
    const list = (Array.isArray(targets) ? targets : [targets]).map(parseTarget);
    if (list.length === 0) throw new TypeError("no coordinator URL");
    this.targets = list;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    const tls = list.some((t) => t.tls);
    this.creds = {
      channel: tls ? credentials.createSsl(pem(options.ca), pem(options.key), pem(options.cert)) : undefined,
      token: options.token?.trim(),
    };
  }

  /** The coordinator calls go to now. */
  get target(): string {
    return this.targets[this.current].url;
  }

  close(): void {
    this.closed = true;
    this.stub?.close();
    this.stub = undefined;
  }

  private client(): SwarmServiceClient {
    if (this.closed) throw new SwarmError(Status.CANCELLED, "the client is closed");
    if (!this.stub) {
      const t = this.targets[this.current];
      const channel = t.tls ? this.creds.channel! : credentials.createInsecure();
      this.stub = new (swarmProto().swarm.v1.SwarmService)(t.address, channel, GRPC_OPTIONS);
    }
    return this.stub;
  }

  /** Goes to the leader a standby named, or else to the next coordinator. */
  private moveOn(leader?: string): void {
    this.stub?.close();
    this.stub = undefined;
    if (leader) {
      const t = parseTarget(leader);
      const known = this.targets.findIndex((k) => k.url === t.url);
      if (known >= 0) {
        this.current = known;
      } else {
        this.targets.push(t);
        this.current = this.targets.length - 1;
      }
    } else {
      this.current = (this.current + 1) % this.targets.length;
    }
  }

  private metadata(): Metadata {
    const md = new Metadata();
    if (this.creds.token) md.set("authorization", `Bearer ${this.creds.token}`);
    return md;
  }

  private options(): CallOptions {
    return { deadline: Date.now() + this.timeoutMs };
  }

  /** A unary call at the leader. `safe`: it may be sent again after an UNAVAILABLE whose
   * request may have arrived (reads, and writes made idempotent by a key). */
  private async unary<Req, Res>(method: string, request: Req, safe = true): Promise<Res> {
    let last: SwarmError | undefined;
    for (let hop = 0; hop <= HOPS; hop++) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          const stub = this.client() as any;
          stub[method](request, this.metadata(), this.options(), (err: unknown, res: Res) =>
            err ? reject(fromServiceError(err)) : resolve(res),
          );
        });
      } catch (e) {
        const err = fromServiceError(e);
        if (!(err instanceof Unavailable) || (!safe && !err.leader)) throw err;
        last = err;
        if (err.leader && err.leader !== this.target) {
          this.moveOn(err.leader);
          continue;
        }
        this.moveOn();
        await sleep(hop < this.targets.length ? 0 : backoff(hop));
      }
    }
    throw last!;
  }

  /** Submits a run; resolves once it is durable. Rejects with `InvalidSpec` carrying every
   * problem of the spec at once, by field. Without an idempotency key, one is made for the
   * call, so that sending it again through a failover cannot start the run twice. */
  async submit(spec: Spec, options: { idempotencyKey?: string } = {}): Promise<Run> {
    const idempotencyKey = options.idempotencyKey ?? `ts-${randomUUID()}`;
    let res: { runId: string; created: boolean };
    if (typeof spec === "object" && spec !== null && "proto" in spec && Object.keys(spec).length === 1) {
      res = await this.unary("SubmitRun", { spec: (spec as { proto: RunSpec }).proto, idempotencyKey });
    } else {
      const specText = typeof spec === "string" ? spec : JSON.stringify(spec);
      if (Buffer.byteLength(specText) > MAX_SUBMIT_BYTES - 1024) {
        res = await this.chunked(encodeSubmit({ spec_text: specText, idempotency_key: idempotencyKey }));
      } else {
        res = await this.unary("SubmitRun", { specText, idempotencyKey });
      }
    }
    return new Run(this, res.runId, res.created);
  }

  /** Submits the spec in a YAML or JSON file (the CLI's format). */
  async submitFile(path: string, options: { idempotencyKey?: string } = {}): Promise<Run> {
    return this.submit(await readFile(path, "utf8"), options);
  }

  private async chunked(data: Uint8Array): Promise<{ runId: string; created: boolean }> {
    let last: SwarmError | undefined;
    for (let hop = 0; hop <= HOPS; hop++) {
      try {
        return await new Promise((resolve, reject) => {
          const call = (this.client() as any).SubmitRunChunked(this.metadata(), this.options(), (err: unknown, res: any) =>
            err ? reject(fromServiceError(err)) : resolve(res),
          );
          for (let i = 0; i < data.length; i += CHUNK_BYTES) {
            call.write({ data: data.subarray(i, i + CHUNK_BYTES), totalBytes: i === 0 ? data.length : 0 });
          }
          call.end();
        });
      } catch (e) {
        const err = fromServiceError(e);
        if (!(err instanceof Unavailable)) throw err;
        last = err;
        this.moveOn(err.leader !== this.target ? err.leader : undefined);
        await sleep(backoff(hop));
      }
    }
    throw last!;
  }

  /** A run's state and summary (with every subtask when `subtasks`, all pages). */
  async get(runId: string, options: { subtasks?: boolean } = {}): Promise<RunResult> {
    let pageToken = "";
    let run: Run__Output | undefined;
    const subtasks: Run__Output["subtasks"] = [];
    do {
      const res = await this.unary<object, { run: Run__Output; nextPageToken: string }>("GetRun", {
        runId,
        includeSubtasks: options.subtasks ?? false,
        pageToken,
      });
      run = res.run;
      subtasks.push(...res.run.subtasks);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return result({ ...run, subtasks });
  }

  /** The latest runs, newest first (at most `limit`, default 50), of one spec version if given. */
  async list(options: { limit?: number; specVersion?: string } = {}): Promise<RunResult[]> {
    const limit = options.limit ?? 50;
    const out: RunResult[] = [];
    let pageToken = "";
    do {
      const res = await this.unary<object, { runs: Run__Output[]; nextPageToken: string }>("ListRuns", {
        pageSize: Math.min(1000, limit - out.length),
        pageToken,
        specVersion: options.specVersion ?? "",
      });
      out.push(...res.runs.map(result));
      pageToken = res.nextPageToken;
    } while (pageToken && out.length < limit);
    return out.slice(0, limit);
  }

  /** Cancels a run; what finished is kept. */
  async cancel(runId: string, reason = ""): Promise<RunResult> {
    const res = await this.unary<object, { run: Run__Output }>("CancelRun", { runId, reason });
    return result(res.run);
  }

  /** Decides a subtask waiting for approval: `approve`, with optional data (JSON) and reason. */
  async signal(
    runId: string,
    subtaskId: string,
    decision: { approve: boolean; data?: unknown; reason?: string },
  ): Promise<SignalRunResponse__Output> {
    return this.unary(
      "SignalRun",
      {
        runId,
        subtaskId,
        decision: decision.approve ? "APPROVE" : "REJECT",
        payloadJson: decision.data === undefined ? "" : JSON.stringify(decision.data),
        reason: decision.reason ?? "",
      },
      // A decision already taken is refused, not applied twice.
      true,
    );
  }

  approve(runId: string, subtaskId: string, data?: unknown, reason?: string): Promise<SignalRunResponse__Output> {
    return this.signal(runId, subtaskId, { approve: true, data, reason });
  }

  deny(runId: string, subtaskId: string, reason?: string): Promise<SignalRunResponse__Output> {
    return this.signal(runId, subtaskId, { approve: false, reason });
  }

  /** Starts a new run from `fromSubtask` of `runId`: what does not depend on it is reused
   * (no call made again); it and what follows it run again, with `patch` (a partial spec,
   * as an object or YAML/JSON text) applied; `step` reuses an agent's first turns. */
  async fork(
    runId: string,
    fromSubtask: string,
    options: { patch?: Record<string, unknown> | string; step?: number; idempotencyKey?: string } = {},
  ): Promise<Run> {
    const patch = options.patch === undefined ? "" : typeof options.patch === "string" ? options.patch : JSON.stringify(options.patch);
    const req: Record<string, unknown> = {
      runId,
      fromSubtask,
      patch,
      idempotencyKey: options.idempotencyKey ?? `ts-${randomUUID()}`,
    };
    if (options.step !== undefined) req.fromStep = options.step;
    const res = await this.unary<object, { runId: string; created: boolean }>("ForkRun", req);
    return new Run(this, res.runId, res.created);
  }

  /** The connected workers. */
  async workers(): Promise<WorkerInfo__Output[]> {
    return (await this.unary<object, { workers: WorkerInfo__Output[] }>("ListWorkers", {})).workers;
  }

  /** A run's events from `afterSeq` until it ends, as an async iterator. A stream that breaks
   * (a dropped connection, a coordinator gone, a failover) is resumed after the last event
   * seen, on the next coordinator if this one is gone: no event twice, none missing. */
  async *watch(runId: string, options: WatchOptions = {}): AsyncGenerator<RunEvent__Output, void, undefined> {
    const signal = options.signal;
    let afterSeq = options.afterSeq ?? 0;
    let outputEpoch = 0;
    let afterOutputSeq = 0;
    let failures = 0;
    while (!signal?.aborted) {
      const call = (this.client() as any).WatchRun(
        { runId, afterSeq, followOutput: options.followOutput ?? false, outputEpoch, afterOutputSeq },
        this.metadata(),
      );
      const abort = () => call.cancel();
      signal?.addEventListener("abort", abort, { once: true });
      try {
        for await (const ev of call as AsyncIterable<RunEvent__Output>) {
          failures = 0;
          if (ev.event === "agentOutput") {
            const o = ev.agentOutput!;
            const epoch = Number(o.outputEpoch);
            const seq = Number(o.outputSeq);
            if (epoch === outputEpoch && seq <= afterOutputSeq) continue;
            outputEpoch = epoch;
            afterOutputSeq = seq;
          } else {
            const seq = Number(ev.seq);
            if (seq <= afterSeq) continue;
            afterSeq = seq;
          }
          yield ev;
          if (ev.event === "runFinished") return;
        }
      } catch (e) {
        if (signal?.aborted) return;
        const err = fromServiceError(e);
        // A broken stream (the coordinator went away, or a proxy cut it) is resumed; a refusal
        // (no such run, no permission) is the caller's to see.
        const broken = err instanceof Unavailable || err.code === Status.INTERNAL || err.code === Status.CANCELLED;
        if (!broken) throw err;
        if (err.leader && err.leader !== this.target) {
          this.moveOn(err.leader);
          continue;
        }
        this.moveOn();
      } finally {
        signal?.removeEventListener("abort", abort);
      }
      if (signal?.aborted) return;
      // The stream broke, or ended before the run did (a deposed leader ends its watches).
      if (failures >= MAX_RECONNECTS) {
        throw new Unavailable(Status.UNAVAILABLE, `the event stream of ${runId} keeps breaking`);
      }
      await sleep(backoff(failures), signal);
      failures++;
    }
  }

  /** The agents' live output of a run while it runs (best effort: output is not durable). */
  async *output(runId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<AgentOutput__Output, void, undefined> {
    for await (const ev of this.watch(runId, { followOutput: true, signal: options.signal })) {
      if (ev.event === "agentOutput" && ev.agentOutput) yield ev.agentOutput;
    }
  }
}

/** A submitted run. */
export class Run {
  constructor(
    readonly client: Client,
    readonly runId: string,
    /** False when the idempotency key named an existing run. */
    readonly created: boolean = true,
  ) {}

  watch(options: WatchOptions = {}): AsyncGenerator<RunEvent__Output, void, undefined> {
    return this.client.watch(this.runId, options);
  }

  /** Waits for the run to end (following its events); its final state and summary. */
  async wait(options: { signal?: AbortSignal } = {}): Promise<RunResult> {
    for await (const _ of this.watch({ signal: options.signal })) {
      // Drained: the last one is RunFinished.
    }
    return this.client.get(this.runId);
  }

  get(options: { subtasks?: boolean } = {}): Promise<RunResult> {
    return this.client.get(this.runId, options);
  }

  cancel(reason = ""): Promise<RunResult> {
    return this.client.cancel(this.runId, reason);
  }
}
