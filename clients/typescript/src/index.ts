// @swarm/client: Swarm's TypeScript client over @grpc/grpc-js. See README.md.
export { Client, Run, parseTarget, durationMs } from "./client.js";
export type { ClientOptions, RunResult, RunStateName, Spec, SubtaskResult, WatchOptions } from "./client.js";
export {
  AlreadyExists,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidSpec,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  SwarmError,
  Unauthenticated,
  Unavailable,
} from "./errors.js";
export type { FieldViolation } from "./errors.js";
export type { RunEvent__Output as RunEvent } from "./proto/swarm/v1/RunEvent.js";
export type { AgentOutput__Output as AgentOutput } from "./proto/swarm/v1/AgentOutput.js";
export type { WorkerInfo__Output as WorkerInfo } from "./proto/swarm/v1/WorkerInfo.js";
