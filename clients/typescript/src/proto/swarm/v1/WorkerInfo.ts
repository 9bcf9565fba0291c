// Original file: proto/swarm/v1/swarm.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.js';

export interface WorkerInfo {
  'workerId'?: (string);
  'slots'?: (number);
  'running'?: (number);
  'tools'?: (string)[];
  'labels'?: ({[key: string]: string});
  'lastHeard'?: (_google_protobuf_Timestamp | null);
  'connectedAt'?: (_google_protobuf_Timestamp | null);
  'draining'?: (boolean);
}

export interface WorkerInfo__Output {
  'workerId': (string);
  'slots': (number);
  'running': (number);
  'tools': (string)[];
  'labels': ({[key: string]: string});
  'lastHeard': (_google_protobuf_Timestamp__Output | null);
  'connectedAt': (_google_protobuf_Timestamp__Output | null);
  'draining': (boolean);
}
