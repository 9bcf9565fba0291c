// Original file: proto/swarm/v1/swarm.proto

import type { Decision as _swarm_v1_Decision, Decision__Output as _swarm_v1_Decision__Output } from '../../swarm/v1/Decision.js';

export interface SignalRunResponse {
  'decision'?: (_swarm_v1_Decision);
  'alreadyDecided'?: (boolean);
  'payloadJson'?: (string);
  'reason'?: (string);
}

export interface SignalRunResponse__Output {
  'decision': (_swarm_v1_Decision__Output);
  'alreadyDecided': (boolean);
  'payloadJson': (string);
  'reason': (string);
}
