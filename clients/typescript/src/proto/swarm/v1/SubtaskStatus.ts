// Original file: proto/swarm/v1/swarm.proto

import type { SubtaskState as _swarm_v1_SubtaskState, SubtaskState__Output as _swarm_v1_SubtaskState__Output } from '../../swarm/v1/SubtaskState.js';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.js';
import type { FailureKind as _swarm_v1_FailureKind, FailureKind__Output as _swarm_v1_FailureKind__Output } from '../../swarm/v1/FailureKind.js';
import type { Artifact as _swarm_v1_Artifact, Artifact__Output as _swarm_v1_Artifact__Output } from '../../swarm/v1/Artifact.js';

export interface SubtaskStatus {
  'id'?: (string);
  'state'?: (_swarm_v1_SubtaskState);
  'attempt'?: (number);
  'workerId'?: (string);
  'startedAt'?: (_google_protobuf_Timestamp | null);
  'finishedAt'?: (_google_protobuf_Timestamp | null);
  'outputJson'?: (string);
  'errorKind'?: (_swarm_v1_FailureKind);
  'errorMessage'?: (string);
  'tool'?: (string);
  'outputRef'?: (string);
  'dependsOn'?: (string)[];
  'kind'?: (string);
  'parent'?: (string);
  'stage'?: (number);
  'readyAt'?: (_google_protobuf_Timestamp | null);
  'firstStartedAt'?: (_google_protobuf_Timestamp | null);
  'approvalPrompt'?: (string);
  'artifacts'?: (_swarm_v1_Artifact)[];
  'reusedFrom'?: (string);
}

export interface SubtaskStatus__Output {
  'id': (string);
  'state': (_swarm_v1_SubtaskState__Output);
  'attempt': (number);
  'workerId': (string);
  'startedAt': (_google_protobuf_Timestamp__Output | null);
  'finishedAt': (_google_protobuf_Timestamp__Output | null);
  'outputJson': (string);
  'errorKind': (_swarm_v1_FailureKind__Output);
  'errorMessage': (string);
  'tool': (string);
  'outputRef': (string);
  'dependsOn': (string)[];
  'kind': (string);
  'parent': (string);
  'stage': (number);
  'readyAt': (_google_protobuf_Timestamp__Output | null);
  'firstStartedAt': (_google_protobuf_Timestamp__Output | null);
  'approvalPrompt': (string);
  'artifacts': (_swarm_v1_Artifact__Output)[];
  'reusedFrom': (string);
}
