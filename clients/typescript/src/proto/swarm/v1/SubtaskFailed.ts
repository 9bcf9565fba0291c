// Original file: proto/swarm/v1/swarm.proto

import type { FailureKind as _swarm_v1_FailureKind, FailureKind__Output as _swarm_v1_FailureKind__Output } from '../../swarm/v1/FailureKind.js';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';

export interface SubtaskFailed {
  'subtaskId'?: (string);
  'attempt'?: (number);
  'kind'?: (_swarm_v1_FailureKind);
  'message'?: (string);
  'retryIn'?: (_google_protobuf_Duration | null);
}

export interface SubtaskFailed__Output {
  'subtaskId': (string);
  'attempt': (number);
  'kind': (_swarm_v1_FailureKind__Output);
  'message': (string);
  'retryIn': (_google_protobuf_Duration__Output | null);
}
