// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';

export interface Speculated {
  'subtaskId'?: (string);
  'workerId'?: (string);
  'after'?: (_google_protobuf_Duration | null);
}

export interface Speculated__Output {
  'subtaskId': (string);
  'workerId': (string);
  'after': (_google_protobuf_Duration__Output | null);
}
