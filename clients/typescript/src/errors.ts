// Typed errors: every failed call rejects with a SwarmError (or a subclass by status code),
// carrying the details the coordinator puts in `grpc-status-details-bin` (google.rpc.Status):
// the BadRequest field violations, the RetryInfo delay, the NOT_LEADER hint.
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

import { details } from "./wire.js";

/** A field of the request and what is wrong with it (google.rpc.BadRequest.FieldViolation). */
export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed call. `code` is the gRPC status code, `codeName` its name (`INVALID_ARGUMENT`). */
export class SwarmError extends Error {
  readonly code: Status;
  readonly codeName: string;
  /** The status message as the coordinator wrote it. */
  readonly details: string;
  /** Every problem of the request, by field (INVALID_ARGUMENT). */
  readonly violations: FieldViolation[];
  /** How long to wait before trying again (RESOURCE_EXHAUSTED, UNAVAILABLE), if said. */
  readonly retryAfterMs?: number;
  /** The leader's URL, when a standby refuses a call it cannot forward. */
  readonly leader?: string;

  constructor(code: Status, message: string, extra: Partial<Pick<SwarmError, "violations" | "retryAfterMs" | "leader">> = {}) {
    const name = Status[code] ?? `CODE_${code}`;
    super(`${name}: ${message}`);
    this.name = new.target.name;
    this.code = code;
    this.codeName = name;
    this.details = message;
    this.violations = extra.violations ?? [];
    this.retryAfterMs = extra.retryAfterMs;
    this.leader = extra.leader;
  }
}

/** INVALID_ARGUMENT: a spec (or another request) with problems, all of them in `violations`. */
export class InvalidSpec extends SwarmError {}
/** NOT_FOUND: no such run, subtask or artifact. */
export class NotFound extends SwarmError {}
/** ALREADY_EXISTS. */
export class AlreadyExists extends SwarmError {}
/** FAILED_PRECONDITION: the run is not in a state that allows the call, or an idempotency key
 * already names a run of another spec. */
export class FailedPrecondition extends SwarmError {}
/** PERMISSION_DENIED: the principal lacks the role the call needs. */
export class PermissionDenied extends SwarmError {}
/** UNAUTHENTICATED: no token, or an unknown one. */
export class Unauthenticated extends SwarmError {}
/** RESOURCE_EXHAUSTED: a quota or limit; `retryAfterMs` says when to try again. */
export class ResourceExhausted extends SwarmError {}
/** UNAVAILABLE: no coordinator reachable (or a standby naming the leader in `leader`). */
export class Unavailable extends SwarmError {}
/** DEADLINE_EXCEEDED. */
export class DeadlineExceeded extends SwarmError {}

const BY_CODE: Partial<Record<Status, typeof SwarmError>> = {
  [Status.INVALID_ARGUMENT]: InvalidSpec,
  [Status.NOT_FOUND]: NotFound,
  [Status.ALREADY_EXISTS]: AlreadyExists,
  [Status.FAILED_PRECONDITION]: FailedPrecondition,
  [Status.PERMISSION_DENIED]: PermissionDenied,
  [Status.UNAUTHENTICATED]: Unauthenticated,
  [Status.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [Status.UNAVAILABLE]: Unavailable,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceeded,
};

/** The SwarmError for a status with these trailers. A broken details trailer is no details. */
export function fromStatus(code: Status, message: string, trailers?: Metadata): SwarmError {
  const extra: { violations?: FieldViolation[]; retryAfterMs?: number; leader?: string } = {};
  const bin = trailers?.get("grpc-status-details-bin")[0];
  if (bin instanceof Buffer) {
    const d = details(bin);
    extra.violations = d.violations;
    extra.retryAfterMs = d.retryAfterMs;
    extra.leader = d.leader;
  }
  const Kind = BY_CODE[code] ?? SwarmError;
  return new Kind(code, message, extra);
}

/** The SwarmError for what a grpc-js call rejected or emitted with. */
export function fromServiceError(e: unknown): SwarmError {
  if (e instanceof SwarmError) return e;
  const se = e as Partial<ServiceError>;
  if (typeof se?.code === "number") {
    return fromStatus(se.code, se.details ?? se.message ?? "", se.metadata);
  }
  return new SwarmError(Status.UNKNOWN, e instanceof Error ? e.message : String(e));
}
