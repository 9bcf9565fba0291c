// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';
import type { Decision as _swarm_v1_Decision, Decision__Output as _swarm_v1_Decision__Output } from '../../swarm/v1/Decision.js';

export interface ApprovalSpec {
  'prompt'?: (string);
  'timeout'?: (_google_protobuf_Duration | null);
  'onTimeout'?: (_swarm_v1_Decision);
}

export interface ApprovalSpec__Output {
  'prompt': (string);
  'timeout': (_google_protobuf_Duration__Output | null);
  'onTimeout': (_swarm_v1_Decision__Output);
}
