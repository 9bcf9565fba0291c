// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface Artifact {
  'path'?: (string);
  'size'?: (number | string | Long);
  'sha256'?: (string);
  'key'?: (string);
}

export interface Artifact__Output {
  'path': (string);
  'size': (number);
  'sha256': (string);
  'key': (string);
}
