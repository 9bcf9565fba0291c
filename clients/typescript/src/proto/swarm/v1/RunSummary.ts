// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';
import type { FailureKind as _swarm_v1_FailureKind, FailureKind__Output as _swarm_v1_FailureKind__Output } from '../../swarm/v1/FailureKind.js';
import type { WallBreakdown as _swarm_v1_WallBreakdown, WallBreakdown__Output as _swarm_v1_WallBreakdown__Output } from '../../swarm/v1/WallBreakdown.js';
import type { ModelTokens as _swarm_v1_ModelTokens, ModelTokens__Output as _swarm_v1_ModelTokens__Output } from '../../swarm/v1/ModelTokens.js';
import type { Long } from '@grpc/proto-loader';

export interface RunSummary {
  'totalSubtasks'?: (number);
  'toolCallsCompleted'?: (number);
  'toolCallsFailed'?: (number);
  'toolCallsSkipped'?: (number);
  'attempts'?: (number);
  'wallTime'?: (_google_protobuf_Duration | null);
  'totalWork'?: (_google_protobuf_Duration | null);
  'criticalPathTime'?: (_google_protobuf_Duration | null);
  'criticalPath'?: (string)[];
  'criticalSteps'?: (number | string | Long);
  'totalSteps'?: (number | string | Long);
  'parallelism'?: (number | string);
  'agentToolCalls'?: (number);
  'subagents'?: (number);
  'tokens'?: (number | string | Long);
  'speculativeAttempts'?: (number);
  'speculativeWins'?: (number);
  'errorKind'?: (_swarm_v1_FailureKind);
  'errorMessage'?: (string);
  'wallBreakdown'?: (_swarm_v1_WallBreakdown | null);
  'tokensByModel'?: (_swarm_v1_ModelTokens)[];
  'tokenBudget'?: (number | string | Long);
  'callsReused'?: (number);
  'callsMade'?: (number);
  'agentResumes'?: (number);
  'agentResumesSticky'?: (number);
}

export interface RunSummary__Output {
  'totalSubtasks': (number);
  'toolCallsCompleted': (number);
  'toolCallsFailed': (number);
  'toolCallsSkipped': (number);
  'attempts': (number);
  'wallTime': (_google_protobuf_Duration__Output | null);
  'totalWork': (_google_protobuf_Duration__Output | null);
  'criticalPathTime': (_google_protobuf_Duration__Output | null);
  'criticalPath': (string)[];
  'criticalSteps': (number);
  'totalSteps': (number);
  'parallelism': (number);
  'agentToolCalls': (number);
  'subagents': (number);
  'tokens': (number);
  'speculativeAttempts': (number);
  'speculativeWins': (number);
  'errorKind': (_swarm_v1_FailureKind__Output);
  'errorMessage': (string);
  'wallBreakdown': (_swarm_v1_WallBreakdown__Output | null);
  'tokensByModel': (_swarm_v1_ModelTokens__Output)[];
  'tokenBudget': (number);
  'callsReused': (number);
  'callsMade': (number);
  'agentResumes': (number);
  'agentResumesSticky': (number);
}
