// Original file: proto/swarm/v1/swarm.proto

import type { Decision as _swarm_v1_Decision, Decision__Output as _swarm_v1_Decision__Output } from '../../swarm/v1/Decision.js';

export interface SignalRunRequest {
  'runId'?: (string);
  'subtaskId'?: (string);
  'decision'?: (_swarm_v1_Decision);
  'payloadJson'?: (string);
  'reason'?: (string);
}

export interface SignalRunRequest__Output {
  'runId': (string);
  'subtaskId': (string);
  'decision': (_swarm_v1_Decision__Output);
  'payloadJson': (string);
  'reason': (string);
}
