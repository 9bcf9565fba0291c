// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';
import type { RetryPolicy as _swarm_v1_RetryPolicy, RetryPolicy__Output as _swarm_v1_RetryPolicy__Output } from '../../swarm/v1/RetryPolicy.js';
import type { SubtaskOutputs as _swarm_v1_SubtaskOutputs, SubtaskOutputs__Output as _swarm_v1_SubtaskOutputs__Output } from '../../swarm/v1/SubtaskOutputs.js';
import type { Placement as _swarm_v1_Placement, Placement__Output as _swarm_v1_Placement__Output } from '../../swarm/v1/Placement.js';
import type { ToolCall as _swarm_v1_ToolCall, ToolCall__Output as _swarm_v1_ToolCall__Output } from '../../swarm/v1/ToolCall.js';
import type { AgentSpec as _swarm_v1_AgentSpec, AgentSpec__Output as _swarm_v1_AgentSpec__Output } from '../../swarm/v1/AgentSpec.js';
import type { OrchestratorSpec as _swarm_v1_OrchestratorSpec, OrchestratorSpec__Output as _swarm_v1_OrchestratorSpec__Output } from '../../swarm/v1/OrchestratorSpec.js';
import type { ApprovalSpec as _swarm_v1_ApprovalSpec, ApprovalSpec__Output as _swarm_v1_ApprovalSpec__Output } from '../../swarm/v1/ApprovalSpec.js';

export interface SubtaskSpec {
  'id'?: (string);
  'dependsOn'?: (string)[];
  'timeout'?: (_google_protobuf_Duration | null);
  'retry'?: (_swarm_v1_RetryPolicy | null);
  'outputs'?: (_swarm_v1_SubtaskOutputs | null);
  'placement'?: (_swarm_v1_Placement | null);
  'toolCall'?: (_swarm_v1_ToolCall | null);
  'agent'?: (_swarm_v1_AgentSpec | null);
  'orchestrator'?: (_swarm_v1_OrchestratorSpec | null);
  'approval'?: (_swarm_v1_ApprovalSpec | null);
  'kind'?: "toolCall"|"agent"|"orchestrator"|"approval";
}

export interface SubtaskSpec__Output {
  'id': (string);
  'dependsOn': (string)[];
  'timeout': (_google_protobuf_Duration__Output | null);
  'retry': (_swarm_v1_RetryPolicy__Output | null);
  'outputs': (_swarm_v1_SubtaskOutputs__Output | null);
  'placement': (_swarm_v1_Placement__Output | null);
  'toolCall'?: (_swarm_v1_ToolCall__Output | null);
  'agent'?: (_swarm_v1_AgentSpec__Output | null);
  'orchestrator'?: (_swarm_v1_OrchestratorSpec__Output | null);
  'approval'?: (_swarm_v1_ApprovalSpec__Output | null);
  'kind'?: "toolCall"|"agent"|"orchestrator"|"approval";
}
