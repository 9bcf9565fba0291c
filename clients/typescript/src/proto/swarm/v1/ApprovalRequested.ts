// Original file: proto/swarm/v1/swarm.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.js';
import type { Decision as _swarm_v1_Decision, Decision__Output as _swarm_v1_Decision__Output } from '../../swarm/v1/Decision.js';

export interface ApprovalRequested {
  'subtaskId'?: (string);
  'prompt'?: (string);
  'deadline'?: (_google_protobuf_Timestamp | null);
  'onTimeout'?: (_swarm_v1_Decision);
}

export interface ApprovalRequested__Output {
  'subtaskId': (string);
  'prompt': (string);
  'deadline': (_google_protobuf_Timestamp__Output | null);
  'onTimeout': (_swarm_v1_Decision__Output);
}
