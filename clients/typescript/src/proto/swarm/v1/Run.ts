// Original file: proto/swarm/v1/swarm.proto

import type { RunState as _swarm_v1_RunState, RunState__Output as _swarm_v1_RunState__Output } from '../../swarm/v1/RunState.js';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.js';
import type { RunSummary as _swarm_v1_RunSummary, RunSummary__Output as _swarm_v1_RunSummary__Output } from '../../swarm/v1/RunSummary.js';
import type { SubtaskStatus as _swarm_v1_SubtaskStatus, SubtaskStatus__Output as _swarm_v1_SubtaskStatus__Output } from '../../swarm/v1/SubtaskStatus.js';
import type { Long } from '@grpc/proto-loader';

export interface Run {
  'runId'?: (string);
  'name'?: (string);
  'state'?: (_swarm_v1_RunState);
  'submittedAt'?: (_google_protobuf_Timestamp | null);
  'finishedAt'?: (_google_protobuf_Timestamp | null);
  'summary'?: (_swarm_v1_RunSummary | null);
  'lastSeq'?: (number | string | Long);
  'subtasks'?: (_swarm_v1_SubtaskStatus)[];
  'tenant'?: (string);
  'specVersion'?: (string);
  'specHash'?: (string);
  'forkedFromRun'?: (string);
  'forkedFromSubtask'?: (string);
  'forkedFromStep'?: (number);
  '_forkedFromStep'?: "forkedFromStep";
}

export interface Run__Output {
  'runId': (string);
  'name': (string);
  'state': (_swarm_v1_RunState__Output);
  'submittedAt': (_google_protobuf_Timestamp__Output | null);
  'finishedAt': (_google_protobuf_Timestamp__Output | null);
  'summary': (_swarm_v1_RunSummary__Output | null);
  'lastSeq': (number);
  'subtasks': (_swarm_v1_SubtaskStatus__Output)[];
  'tenant': (string);
  'specVersion': (string);
  'specHash': (string);
  'forkedFromRun': (string);
  'forkedFromSubtask': (string);
  'forkedFromStep'?: (number);
  '_forkedFromStep'?: "forkedFromStep";
}
