// The protos as the client loads them: the service for grpc-js (proto-loader, with the options
// ./generate gives proto-loader-gen-types, so src/proto's types describe what arrives), and
// protobufjs types for what grpc-js does not decode (error details, chunked submissions).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { loadPackageDefinition, type GrpcObject } from "@grpc/grpc-js";
import { loadSync, type Options } from "@grpc/proto-loader";
import protobuf from "protobufjs";

import type { ProtoGrpcType } from "./proto/swarm.js";
import type { FieldViolation } from "./errors.js";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The package's proto/ folder (beside dist/ once built; beside src/ when run from source). */
export const PROTO_DIR = [path.resolve(here, "../../proto"), path.resolve(here, "../proto")].find((d) =>
  existsSync(path.join(d, "swarm/v1/swarm.proto")),
) ?? path.resolve(here, "../../proto");

export const LOAD_OPTIONS: Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let service: ProtoGrpcType | undefined;
/** The generated service constructors (loaded once). */
export function swarmProto(): ProtoGrpcType {
  service ??= loadPackageDefinition(loadSync("swarm/v1/swarm.proto", LOAD_OPTIONS)) as GrpcObject as unknown as ProtoGrpcType;
  return service;
}

let root: protobuf.Root | undefined;
function types(): protobuf.Root {
  if (!root) {
    root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
    root.loadSync(["swarm/v1/swarm.proto", "swarm/client/rpc/details.proto"], { keepCase: true });
  }
  return root;
}

/** What a `grpc-status-details-bin` trailer says (google.rpc.Status and its details). */
export function details(bin: Buffer): { violations: FieldViolation[]; retryAfterMs?: number; leader?: string } {
  const out: { violations: FieldViolation[]; retryAfterMs?: number; leader?: string } = { violations: [] };
  let status: any;
  try {
    status = types().lookupType("swarm.client.rpc.Status").decode(bin);
  } catch {
    return out;
  }
  for (const any of status.details ?? []) {
    const name = String(any.type_url ?? "").split("/").pop() ?? "";
    const local = name.replace(/^google\.rpc\./, "swarm.client.rpc.");
    if (local === name) continue;
    let msg: any;
    try {
      msg = types().lookupType(local).decode(any.value);
    } catch {
      continue;
    }
    if (local.endsWith(".BadRequest")) {
      for (const v of msg.field_violations ?? []) out.violations.push({ field: v.field, description: v.description });
    } else if (local.endsWith(".RetryInfo") && msg.retry_delay) {
      out.retryAfterMs = Number(msg.retry_delay.seconds ?? 0) * 1000 + Number(msg.retry_delay.nanos ?? 0) / 1e6;
    } else if (local.endsWith(".ErrorInfo") && msg.reason === "NOT_LEADER" && msg.metadata?.leader) {
      out.leader = msg.metadata.leader;
    }
  }
  return out;
}

/** The wire encoding of a SubmitRunRequest (for SubmitRunChunked). */
export function encodeSubmit(req: { spec_text?: string; idempotency_key?: string }): Uint8Array {
  const type = types().lookupType("swarm.v1.SubmitRunRequest");
  return type.encode(type.create(req)).finish();
}
