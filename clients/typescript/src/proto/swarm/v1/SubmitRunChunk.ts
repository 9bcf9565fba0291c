// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface SubmitRunChunk {
  'data'?: (Buffer | Uint8Array | string);
  'totalBytes'?: (number | string | Long);
}

export interface SubmitRunChunk__Output {
  'data': (Buffer);
  'totalBytes': (number);
}
