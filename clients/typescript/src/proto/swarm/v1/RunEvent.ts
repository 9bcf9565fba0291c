// Original file: proto/swarm/v1/swarm.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.js';
import type { RunStarted as _swarm_v1_RunStarted, RunStarted__Output as _swarm_v1_RunStarted__Output } from '../../swarm/v1/RunStarted.js';
import type { SubtaskStarted as _swarm_v1_SubtaskStarted, SubtaskStarted__Output as _swarm_v1_SubtaskStarted__Output } from '../../swarm/v1/SubtaskStarted.js';
import type { SubtaskSucceeded as _swarm_v1_SubtaskSucceeded, SubtaskSucceeded__Output as _swarm_v1_SubtaskSucceeded__Output } from '../../swarm/v1/SubtaskSucceeded.js';
import type { SubtaskFailed as _swarm_v1_SubtaskFailed, SubtaskFailed__Output as _swarm_v1_SubtaskFailed__Output } from '../../swarm/v1/SubtaskFailed.js';
import type { SubtaskSkipped as _swarm_v1_SubtaskSkipped, SubtaskSkipped__Output as _swarm_v1_SubtaskSkipped__Output } from '../../swarm/v1/SubtaskSkipped.js';
import type { RunFinished as _swarm_v1_RunFinished, RunFinished__Output as _swarm_v1_RunFinished__Output } from '../../swarm/v1/RunFinished.js';
import type { AgentStep as _swarm_v1_AgentStep, AgentStep__Output as _swarm_v1_AgentStep__Output } from '../../swarm/v1/AgentStep.js';
import type { StageStarted as _swarm_v1_StageStarted, StageStarted__Output as _swarm_v1_StageStarted__Output } from '../../swarm/v1/StageStarted.js';
import type { BudgetExceeded as _swarm_v1_BudgetExceeded, BudgetExceeded__Output as _swarm_v1_BudgetExceeded__Output } from '../../swarm/v1/BudgetExceeded.js';
import type { Warning as _swarm_v1_Warning, Warning__Output as _swarm_v1_Warning__Output } from '../../swarm/v1/Warning.js';
import type { Speculated as _swarm_v1_Speculated, Speculated__Output as _swarm_v1_Speculated__Output } from '../../swarm/v1/Speculated.js';
import type { ApprovalRequested as _swarm_v1_ApprovalRequested, ApprovalRequested__Output as _swarm_v1_ApprovalRequested__Output } from '../../swarm/v1/ApprovalRequested.js';
import type { AgentOutput as _swarm_v1_AgentOutput, AgentOutput__Output as _swarm_v1_AgentOutput__Output } from '../../swarm/v1/AgentOutput.js';
import type { Long } from '@grpc/proto-loader';

export interface RunEvent {
  'runId'?: (string);
  'seq'?: (number | string | Long);
  'time'?: (_google_protobuf_Timestamp | null);
  'runStarted'?: (_swarm_v1_RunStarted | null);
  'subtaskStarted'?: (_swarm_v1_SubtaskStarted | null);
  'subtaskSucceeded'?: (_swarm_v1_SubtaskSucceeded | null);
  'subtaskFailed'?: (_swarm_v1_SubtaskFailed | null);
  'subtaskSkipped'?: (_swarm_v1_SubtaskSkipped | null);
  'runFinished'?: (_swarm_v1_RunFinished | null);
  'agentStep'?: (_swarm_v1_AgentStep | null);
  'stageStarted'?: (_swarm_v1_StageStarted | null);
  'budgetExceeded'?: (_swarm_v1_BudgetExceeded | null);
  'warning'?: (_swarm_v1_Warning | null);
  'speculated'?: (_swarm_v1_Speculated | null);
  'approvalRequested'?: (_swarm_v1_ApprovalRequested | null);
  'agentOutput'?: (_swarm_v1_AgentOutput | null);
  'event'?: "runStarted"|"subtaskStarted"|"subtaskSucceeded"|"subtaskFailed"|"subtaskSkipped"|"runFinished"|"agentStep"|"stageStarted"|"budgetExceeded"|"warning"|"speculated"|"approvalRequested"|"agentOutput";
}

export interface RunEvent__Output {
  'runId': (string);
  'seq': (number);
  'time': (_google_protobuf_Timestamp__Output | null);
  'runStarted'?: (_swarm_v1_RunStarted__Output | null);
  'subtaskStarted'?: (_swarm_v1_SubtaskStarted__Output | null);
  'subtaskSucceeded'?: (_swarm_v1_SubtaskSucceeded__Output | null);
  'subtaskFailed'?: (_swarm_v1_SubtaskFailed__Output | null);
  'subtaskSkipped'?: (_swarm_v1_SubtaskSkipped__Output | null);
  'runFinished'?: (_swarm_v1_RunFinished__Output | null);
  'agentStep'?: (_swarm_v1_AgentStep__Output | null);
  'stageStarted'?: (_swarm_v1_StageStarted__Output | null);
  'budgetExceeded'?: (_swarm_v1_BudgetExceeded__Output | null);
  'warning'?: (_swarm_v1_Warning__Output | null);
  'speculated'?: (_swarm_v1_Speculated__Output | null);
  'approvalRequested'?: (_swarm_v1_ApprovalRequested__Output | null);
  'agentOutput'?: (_swarm_v1_AgentOutput__Output | null);
  'event'?: "runStarted"|"subtaskStarted"|"subtaskSucceeded"|"subtaskFailed"|"subtaskSkipped"|"runFinished"|"agentStep"|"stageStarted"|"budgetExceeded"|"warning"|"speculated"|"approvalRequested"|"agentOutput";
}
