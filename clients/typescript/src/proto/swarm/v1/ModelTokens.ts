// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface ModelTokens {
  'model'?: (string);
  'inputTokens'?: (number | string | Long);
  'outputTokens'?: (number | string | Long);
}

export interface ModelTokens__Output {
  'model': (string);
  'inputTokens': (number);
  'outputTokens': (number);
}
