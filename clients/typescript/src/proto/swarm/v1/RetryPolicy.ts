// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';
import type { FailureKind as _swarm_v1_FailureKind, FailureKind__Output as _swarm_v1_FailureKind__Output } from '../../swarm/v1/FailureKind.js';

export interface RetryPolicy {
  'initialInterval'?: (_google_protobuf_Duration | null);
  'backoffCoefficient'?: (number | string);
  'maximumInterval'?: (_google_protobuf_Duration | null);
  'maximumAttempts'?: (number);
  'jitter'?: (number | string);
  'nonRetryable'?: (_swarm_v1_FailureKind)[];
  '_backoffCoefficient'?: "backoffCoefficient";
  '_maximumAttempts'?: "maximumAttempts";
  '_jitter'?: "jitter";
}

export interface RetryPolicy__Output {
  'initialInterval': (_google_protobuf_Duration__Output | null);
  'backoffCoefficient'?: (number);
  'maximumInterval': (_google_protobuf_Duration__Output | null);
  'maximumAttempts'?: (number);
  'jitter'?: (number);
  'nonRetryable': (_swarm_v1_FailureKind__Output)[];
  '_backoffCoefficient'?: "backoffCoefficient";
  '_maximumAttempts'?: "maximumAttempts";
  '_jitter'?: "jitter";
}
