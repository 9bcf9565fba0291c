// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface WatchRunRequest {
  'runId'?: (string);
  'afterSeq'?: (number | string | Long);
  'followOutput'?: (boolean);
  'afterOutputSeq'?: (number | string | Long);
  'outputEpoch'?: (number | string | Long);
  'catchUpOnly'?: (boolean);
}

export interface WatchRunRequest__Output {
  'runId': (string);
  'afterSeq': (number);
  'followOutput': (boolean);
  'afterOutputSeq': (number);
  'outputEpoch': (number);
  'catchUpOnly': (boolean);
}
