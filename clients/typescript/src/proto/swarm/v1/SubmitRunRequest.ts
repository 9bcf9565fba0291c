// Original file: proto/swarm/v1/swarm.proto

import type { RunSpec as _swarm_v1_RunSpec, RunSpec__Output as _swarm_v1_RunSpec__Output } from '../../swarm/v1/RunSpec.js';

export interface SubmitRunRequest {
  'spec'?: (_swarm_v1_RunSpec | null);
  'idempotencyKey'?: (string);
  'specText'?: (string);
}

export interface SubmitRunRequest__Output {
  'spec': (_swarm_v1_RunSpec__Output | null);
  'idempotencyKey': (string);
  'specText': (string);
}
