// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';

export interface SubtaskSucceeded {
  'subtaskId'?: (string);
  'attempt'?: (number);
  'duration'?: (_google_protobuf_Duration | null);
}

export interface SubtaskSucceeded__Output {
  'subtaskId': (string);
  'attempt': (number);
  'duration': (_google_protobuf_Duration__Output | null);
}
