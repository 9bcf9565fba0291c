import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from './google/protobuf/Duration.js';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from './google/protobuf/Timestamp.js';
import type { AgentOutput as _swarm_v1_AgentOutput, AgentOutput__Output as _swarm_v1_AgentOutput__Output } from './swarm/v1/AgentOutput.js';
import type { AgentSpec as _swarm_v1_AgentSpec, AgentSpec__Output as _swarm_v1_AgentSpec__Output } from './swarm/v1/AgentSpec.js';
import type { AgentStep as _swarm_v1_AgentStep, AgentStep__Output as _swarm_v1_AgentStep__Output } from './swarm/v1/AgentStep.js';
import type { ApprovalRequested as _swarm_v1_ApprovalRequested, ApprovalRequested__Output as _swarm_v1_ApprovalRequested__Output } from './swarm/v1/ApprovalRequested.js';
import type { ApprovalSpec as _swarm_v1_ApprovalSpec, ApprovalSpec__Output as _swarm_v1_ApprovalSpec__Output } from './swarm/v1/ApprovalSpec.js';
import type { Artifact as _swarm_v1_Artifact, Artifact__Output as _swarm_v1_Artifact__Output } from './swarm/v1/Artifact.js';
import type { ArtifactChunk as _swarm_v1_ArtifactChunk, ArtifactChunk__Output as _swarm_v1_ArtifactChunk__Output } from './swarm/v1/ArtifactChunk.js';
import type { BudgetExceeded as _swarm_v1_BudgetExceeded, BudgetExceeded__Output as _swarm_v1_BudgetExceeded__Output } from './swarm/v1/BudgetExceeded.js';
import type { CancelRunRequest as _swarm_v1_CancelRunRequest, CancelRunRequest__Output as _swarm_v1_CancelRunRequest__Output } from './swarm/v1/CancelRunRequest.js';
import type { CancelRunResponse as _swarm_v1_CancelRunResponse, CancelRunResponse__Output as _swarm_v1_CancelRunResponse__Output } from './swarm/v1/CancelRunResponse.js';
import type { ForkRunRequest as _swarm_v1_ForkRunRequest, ForkRunRequest__Output as _swarm_v1_ForkRunRequest__Output } from './swarm/v1/ForkRunRequest.js';
import type { ForkRunResponse as _swarm_v1_ForkRunResponse, ForkRunResponse__Output as _swarm_v1_ForkRunResponse__Output } from './swarm/v1/ForkRunResponse.js';
import type { GetArtifactRequest as _swarm_v1_GetArtifactRequest, GetArtifactRequest__Output as _swarm_v1_GetArtifactRequest__Output } from './swarm/v1/GetArtifactRequest.js';
import type { GetRunRequest as _swarm_v1_GetRunRequest, GetRunRequest__Output as _swarm_v1_GetRunRequest__Output } from './swarm/v1/GetRunRequest.js';
import type { GetRunResponse as _swarm_v1_GetRunResponse, GetRunResponse__Output as _swarm_v1_GetRunResponse__Output } from './swarm/v1/GetRunResponse.js';
import type { GetTranscriptRequest as _swarm_v1_GetTranscriptRequest, GetTranscriptRequest__Output as _swarm_v1_GetTranscriptRequest__Output } from './swarm/v1/GetTranscriptRequest.js';
import type { GetTranscriptResponse as _swarm_v1_GetTranscriptResponse, GetTranscriptResponse__Output as _swarm_v1_GetTranscriptResponse__Output } from './swarm/v1/GetTranscriptResponse.js';
import type { ListRunsRequest as _swarm_v1_ListRunsRequest, ListRunsRequest__Output as _swarm_v1_ListRunsRequest__Output } from './swarm/v1/ListRunsRequest.js';
import type { ListRunsResponse as _swarm_v1_ListRunsResponse, ListRunsResponse__Output as _swarm_v1_ListRunsResponse__Output } from './swarm/v1/ListRunsResponse.js';
import type { ListWorkersRequest as _swarm_v1_ListWorkersRequest, ListWorkersRequest__Output as _swarm_v1_ListWorkersRequest__Output } from './swarm/v1/ListWorkersRequest.js';
import type { ListWorkersResponse as _swarm_v1_ListWorkersResponse, ListWorkersResponse__Output as _swarm_v1_ListWorkersResponse__Output } from './swarm/v1/ListWorkersResponse.js';
import type { ModelTokens as _swarm_v1_ModelTokens, ModelTokens__Output as _swarm_v1_ModelTokens__Output } from './swarm/v1/ModelTokens.js';
import type { OrchestratorSpec as _swarm_v1_OrchestratorSpec, OrchestratorSpec__Output as _swarm_v1_OrchestratorSpec__Output } from './swarm/v1/OrchestratorSpec.js';
import type { Placement as _swarm_v1_Placement, Placement__Output as _swarm_v1_Placement__Output } from './swarm/v1/Placement.js';
import type { PlacementPreference as _swarm_v1_PlacementPreference, PlacementPreference__Output as _swarm_v1_PlacementPreference__Output } from './swarm/v1/PlacementPreference.js';
import type { RetryPolicy as _swarm_v1_RetryPolicy, RetryPolicy__Output as _swarm_v1_RetryPolicy__Output } from './swarm/v1/RetryPolicy.js';
import type { Run as _swarm_v1_Run, Run__Output as _swarm_v1_Run__Output } from './swarm/v1/Run.js';
import type { RunEvent as _swarm_v1_RunEvent, RunEvent__Output as _swarm_v1_RunEvent__Output } from './swarm/v1/RunEvent.js';
import type { RunFinished as _swarm_v1_RunFinished, RunFinished__Output as _swarm_v1_RunFinished__Output } from './swarm/v1/RunFinished.js';
import type { RunLimits as _swarm_v1_RunLimits, RunLimits__Output as _swarm_v1_RunLimits__Output } from './swarm/v1/RunLimits.js';
import type { RunSpec as _swarm_v1_RunSpec, RunSpec__Output as _swarm_v1_RunSpec__Output } from './swarm/v1/RunSpec.js';
import type { RunStarted as _swarm_v1_RunStarted, RunStarted__Output as _swarm_v1_RunStarted__Output } from './swarm/v1/RunStarted.js';
import type { RunSummary as _swarm_v1_RunSummary, RunSummary__Output as _swarm_v1_RunSummary__Output } from './swarm/v1/RunSummary.js';
import type { SignalRunRequest as _swarm_v1_SignalRunRequest, SignalRunRequest__Output as _swarm_v1_SignalRunRequest__Output } from './swarm/v1/SignalRunRequest.js';
import type { SignalRunResponse as _swarm_v1_SignalRunResponse, SignalRunResponse__Output as _swarm_v1_SignalRunResponse__Output } from './swarm/v1/SignalRunResponse.js';
import type { Speculated as _swarm_v1_Speculated, Speculated__Output as _swarm_v1_Speculated__Output } from './swarm/v1/Speculated.js';
import type { Speculation as _swarm_v1_Speculation, Speculation__Output as _swarm_v1_Speculation__Output } from './swarm/v1/Speculation.js';
import type { StageStarted as _swarm_v1_StageStarted, StageStarted__Output as _swarm_v1_StageStarted__Output } from './swarm/v1/StageStarted.js';
import type { SubmitRunChunk as _swarm_v1_SubmitRunChunk, SubmitRunChunk__Output as _swarm_v1_SubmitRunChunk__Output } from './swarm/v1/SubmitRunChunk.js';
import type { SubmitRunRequest as _swarm_v1_SubmitRunRequest, SubmitRunRequest__Output as _swarm_v1_SubmitRunRequest__Output } from './swarm/v1/SubmitRunRequest.js';
import type { SubmitRunResponse as _swarm_v1_SubmitRunResponse, SubmitRunResponse__Output as _swarm_v1_SubmitRunResponse__Output } from './swarm/v1/SubmitRunResponse.js';
import type { SubtaskFailed as _swarm_v1_SubtaskFailed, SubtaskFailed__Output as _swarm_v1_SubtaskFailed__Output } from './swarm/v1/SubtaskFailed.js';
import type { SubtaskOutputs as _swarm_v1_SubtaskOutputs, SubtaskOutputs__Output as _swarm_v1_SubtaskOutputs__Output } from './swarm/v1/SubtaskOutputs.js';
import type { SubtaskSkipped as _swarm_v1_SubtaskSkipped, SubtaskSkipped__Output as _swarm_v1_SubtaskSkipped__Output } from './swarm/v1/SubtaskSkipped.js';
import type { SubtaskSpec as _swarm_v1_SubtaskSpec, SubtaskSpec__Output as _swarm_v1_SubtaskSpec__Output } from './swarm/v1/SubtaskSpec.js';
import type { SubtaskStarted as _swarm_v1_SubtaskStarted, SubtaskStarted__Output as _swarm_v1_SubtaskStarted__Output } from './swarm/v1/SubtaskStarted.js';
import type { SubtaskStatus as _swarm_v1_SubtaskStatus, SubtaskStatus__Output as _swarm_v1_SubtaskStatus__Output } from './swarm/v1/SubtaskStatus.js';
import type { SubtaskSucceeded as _swarm_v1_SubtaskSucceeded, SubtaskSucceeded__Output as _swarm_v1_SubtaskSucceeded__Output } from './swarm/v1/SubtaskSucceeded.js';
import type { SwarmServiceClient as _swarm_v1_SwarmServiceClient, SwarmServiceDefinition as _swarm_v1_SwarmServiceDefinition } from './swarm/v1/SwarmService.js';
import type { ToolCall as _swarm_v1_ToolCall, ToolCall__Output as _swarm_v1_ToolCall__Output } from './swarm/v1/ToolCall.js';
import type { ToolFinished as _swarm_v1_ToolFinished, ToolFinished__Output as _swarm_v1_ToolFinished__Output } from './swarm/v1/ToolFinished.js';
import type { WallBreakdown as _swarm_v1_WallBreakdown, WallBreakdown__Output as _swarm_v1_WallBreakdown__Output } from './swarm/v1/WallBreakdown.js';
import type { Warning as _swarm_v1_Warning, Warning__Output as _swarm_v1_Warning__Output } from './swarm/v1/Warning.js';
import type { WatchRunRequest as _swarm_v1_WatchRunRequest, WatchRunRequest__Output as _swarm_v1_WatchRunRequest__Output } from './swarm/v1/WatchRunRequest.js';
import type { WorkerInfo as _swarm_v1_WorkerInfo, WorkerInfo__Output as _swarm_v1_WorkerInfo__Output } from './swarm/v1/WorkerInfo.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    protobuf: {
      Duration: MessageTypeDefinition<_google_protobuf_Duration, _google_protobuf_Duration__Output>
      Timestamp: MessageTypeDefinition<_google_protobuf_Timestamp, _google_protobuf_Timestamp__Output>
    }
  }
  swarm: {
    v1: {
      AgentOutput: MessageTypeDefinition<_swarm_v1_AgentOutput, _swarm_v1_AgentOutput__Output>
      AgentSpec: MessageTypeDefinition<_swarm_v1_AgentSpec, _swarm_v1_AgentSpec__Output>
      AgentStep: MessageTypeDefinition<_swarm_v1_AgentStep, _swarm_v1_AgentStep__Output>
      ApprovalRequested: MessageTypeDefinition<_swarm_v1_ApprovalRequested, _swarm_v1_ApprovalRequested__Output>
      ApprovalSpec: MessageTypeDefinition<_swarm_v1_ApprovalSpec, _swarm_v1_ApprovalSpec__Output>
      Artifact: MessageTypeDefinition<_swarm_v1_Artifact, _swarm_v1_Artifact__Output>
      ArtifactChunk: MessageTypeDefinition<_swarm_v1_ArtifactChunk, _swarm_v1_ArtifactChunk__Output>
      BudgetExceeded: MessageTypeDefinition<_swarm_v1_BudgetExceeded, _swarm_v1_BudgetExceeded__Output>
      CancelRunRequest: MessageTypeDefinition<_swarm_v1_CancelRunRequest, _swarm_v1_CancelRunRequest__Output>
      CancelRunResponse: MessageTypeDefinition<_swarm_v1_CancelRunResponse, _swarm_v1_CancelRunResponse__Output>
      Decision: EnumTypeDefinition
      FailureKind: EnumTypeDefinition
      ForkRunRequest: MessageTypeDefinition<_swarm_v1_ForkRunRequest, _swarm_v1_ForkRunRequest__Output>
      ForkRunResponse: MessageTypeDefinition<_swarm_v1_ForkRunResponse, _swarm_v1_ForkRunResponse__Output>
      GetArtifactRequest: MessageTypeDefinition<_swarm_v1_GetArtifactRequest, _swarm_v1_GetArtifactRequest__Output>
      GetRunRequest: MessageTypeDefinition<_swarm_v1_GetRunRequest, _swarm_v1_GetRunRequest__Output>
      GetRunResponse: MessageTypeDefinition<_swarm_v1_GetRunResponse, _swarm_v1_GetRunResponse__Output>
      GetTranscriptRequest: MessageTypeDefinition<_swarm_v1_GetTranscriptRequest, _swarm_v1_GetTranscriptRequest__Output>
      GetTranscriptResponse: MessageTypeDefinition<_swarm_v1_GetTranscriptResponse, _swarm_v1_GetTranscriptResponse__Output>
      ListRunsRequest: MessageTypeDefinition<_swarm_v1_ListRunsRequest, _swarm_v1_ListRunsRequest__Output>
      ListRunsResponse: MessageTypeDefinition<_swarm_v1_ListRunsResponse, _swarm_v1_ListRunsResponse__Output>
      ListWorkersRequest: MessageTypeDefinition<_swarm_v1_ListWorkersRequest, _swarm_v1_ListWorkersRequest__Output>
      ListWorkersResponse: MessageTypeDefinition<_swarm_v1_ListWorkersResponse, _swarm_v1_ListWorkersResponse__Output>
      ModelTokens: MessageTypeDefinition<_swarm_v1_ModelTokens, _swarm_v1_ModelTokens__Output>
      OrchestratorSpec: MessageTypeDefinition<_swarm_v1_OrchestratorSpec, _swarm_v1_OrchestratorSpec__Output>
      Placement: MessageTypeDefinition<_swarm_v1_Placement, _swarm_v1_Placement__Output>
      PlacementPreference: MessageTypeDefinition<_swarm_v1_PlacementPreference, _swarm_v1_PlacementPreference__Output>
      RetryPolicy: MessageTypeDefinition<_swarm_v1_RetryPolicy, _swarm_v1_RetryPolicy__Output>
      Run: MessageTypeDefinition<_swarm_v1_Run, _swarm_v1_Run__Output>
      RunEvent: MessageTypeDefinition<_swarm_v1_RunEvent, _swarm_v1_RunEvent__Output>
      RunFinished: MessageTypeDefinition<_swarm_v1_RunFinished, _swarm_v1_RunFinished__Output>
      RunLimits: MessageTypeDefinition<_swarm_v1_RunLimits, _swarm_v1_RunLimits__Output>
      RunSpec: MessageTypeDefinition<_swarm_v1_RunSpec, _swarm_v1_RunSpec__Output>
      RunStarted: MessageTypeDefinition<_swarm_v1_RunStarted, _swarm_v1_RunStarted__Output>
      RunState: EnumTypeDefinition
      RunSummary: MessageTypeDefinition<_swarm_v1_RunSummary, _swarm_v1_RunSummary__Output>
      SignalRunRequest: MessageTypeDefinition<_swarm_v1_SignalRunRequest, _swarm_v1_SignalRunRequest__Output>
      SignalRunResponse: MessageTypeDefinition<_swarm_v1_SignalRunResponse, _swarm_v1_SignalRunResponse__Output>
      Speculated: MessageTypeDefinition<_swarm_v1_Speculated, _swarm_v1_Speculated__Output>
      Speculation: MessageTypeDefinition<_swarm_v1_Speculation, _swarm_v1_Speculation__Output>
      StageStarted: MessageTypeDefinition<_swarm_v1_StageStarted, _swarm_v1_StageStarted__Output>
      SubmitRunChunk: MessageTypeDefinition<_swarm_v1_SubmitRunChunk, _swarm_v1_SubmitRunChunk__Output>
      SubmitRunRequest: MessageTypeDefinition<_swarm_v1_SubmitRunRequest, _swarm_v1_SubmitRunRequest__Output>
      SubmitRunResponse: MessageTypeDefinition<_swarm_v1_SubmitRunResponse, _swarm_v1_SubmitRunResponse__Output>
      SubtaskFailed: MessageTypeDefinition<_swarm_v1_SubtaskFailed, _swarm_v1_SubtaskFailed__Output>
      SubtaskOutputs: MessageTypeDefinition<_swarm_v1_SubtaskOutputs, _swarm_v1_SubtaskOutputs__Output>
      SubtaskSkipped: MessageTypeDefinition<_swarm_v1_SubtaskSkipped, _swarm_v1_SubtaskSkipped__Output>
      SubtaskSpec: MessageTypeDefinition<_swarm_v1_SubtaskSpec, _swarm_v1_SubtaskSpec__Output>
      SubtaskStarted: MessageTypeDefinition<_swarm_v1_SubtaskStarted, _swarm_v1_SubtaskStarted__Output>
      SubtaskState: EnumTypeDefinition
      SubtaskStatus: MessageTypeDefinition<_swarm_v1_SubtaskStatus, _swarm_v1_SubtaskStatus__Output>
      SubtaskSucceeded: MessageTypeDefinition<_swarm_v1_SubtaskSucceeded, _swarm_v1_SubtaskSucceeded__Output>
      SwarmService: SubtypeConstructor<typeof grpc.Client, _swarm_v1_SwarmServiceClient> & { service: _swarm_v1_SwarmServiceDefinition }
      ToolCall: MessageTypeDefinition<_swarm_v1_ToolCall, _swarm_v1_ToolCall__Output>
      ToolFinished: MessageTypeDefinition<_swarm_v1_ToolFinished, _swarm_v1_ToolFinished__Output>
      WallBreakdown: MessageTypeDefinition<_swarm_v1_WallBreakdown, _swarm_v1_WallBreakdown__Output>
      Warning: MessageTypeDefinition<_swarm_v1_Warning, _swarm_v1_Warning__Output>
      WatchRunRequest: MessageTypeDefinition<_swarm_v1_WatchRunRequest, _swarm_v1_WatchRunRequest__Output>
      WorkerInfo: MessageTypeDefinition<_swarm_v1_WorkerInfo, _swarm_v1_WorkerInfo__Output>
    }
  }
}

