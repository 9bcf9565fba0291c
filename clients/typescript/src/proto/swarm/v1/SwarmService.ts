// Original file: proto/swarm/v1/swarm.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ArtifactChunk as _swarm_v1_ArtifactChunk, ArtifactChunk__Output as _swarm_v1_ArtifactChunk__Output } from '../../swarm/v1/ArtifactChunk.js';
import type { CancelRunRequest as _swarm_v1_CancelRunRequest, CancelRunRequest__Output as _swarm_v1_CancelRunRequest__Output } from '../../swarm/v1/CancelRunRequest.js';
import type { CancelRunResponse as _swarm_v1_CancelRunResponse, CancelRunResponse__Output as _swarm_v1_CancelRunResponse__Output } from '../../swarm/v1/CancelRunResponse.js';
import type { ForkRunRequest as _swarm_v1_ForkRunRequest, ForkRunRequest__Output as _swarm_v1_ForkRunRequest__Output } from '../../swarm/v1/ForkRunRequest.js';
import type { ForkRunResponse as _swarm_v1_ForkRunResponse, ForkRunResponse__Output as _swarm_v1_ForkRunResponse__Output } from '../../swarm/v1/ForkRunResponse.js';
import type { GetArtifactRequest as _swarm_v1_GetArtifactRequest, GetArtifactRequest__Output as _swarm_v1_GetArtifactRequest__Output } from '../../swarm/v1/GetArtifactRequest.js';
import type { GetRunRequest as _swarm_v1_GetRunRequest, GetRunRequest__Output as _swarm_v1_GetRunRequest__Output } from '../../swarm/v1/GetRunRequest.js';
import type { GetRunResponse as _swarm_v1_GetRunResponse, GetRunResponse__Output as _swarm_v1_GetRunResponse__Output } from '../../swarm/v1/GetRunResponse.js';
import type { GetTranscriptRequest as _swarm_v1_GetTranscriptRequest, GetTranscriptRequest__Output as _swarm_v1_GetTranscriptRequest__Output } from '../../swarm/v1/GetTranscriptRequest.js';
import type { GetTranscriptResponse as _swarm_v1_GetTranscriptResponse, GetTranscriptResponse__Output as _swarm_v1_GetTranscriptResponse__Output } from '../../swarm/v1/GetTranscriptResponse.js';
import type { ListRunsRequest as _swarm_v1_ListRunsRequest, ListRunsRequest__Output as _swarm_v1_ListRunsRequest__Output } from '../../swarm/v1/ListRunsRequest.js';
import type { ListRunsResponse as _swarm_v1_ListRunsResponse, ListRunsResponse__Output as _swarm_v1_ListRunsResponse__Output } from '../../swarm/v1/ListRunsResponse.js';
import type { ListWorkersRequest as _swarm_v1_ListWorkersRequest, ListWorkersRequest__Output as _swarm_v1_ListWorkersRequest__Output } from '../../swarm/v1/ListWorkersRequest.js';
import type { ListWorkersResponse as _swarm_v1_ListWorkersResponse, ListWorkersResponse__Output as _swarm_v1_ListWorkersResponse__Output } from '../../swarm/v1/ListWorkersResponse.js';
import type { RunEvent as _swarm_v1_RunEvent, RunEvent__Output as _swarm_v1_RunEvent__Output } from '../../swarm/v1/RunEvent.js';
import type { SignalRunRequest as _swarm_v1_SignalRunRequest, SignalRunRequest__Output as _swarm_v1_SignalRunRequest__Output } from '../../swarm/v1/SignalRunRequest.js';
import type { SignalRunResponse as _swarm_v1_SignalRunResponse, SignalRunResponse__Output as _swarm_v1_SignalRunResponse__Output } from '../../swarm/v1/SignalRunResponse.js';
import type { SubmitRunChunk as _swarm_v1_SubmitRunChunk, SubmitRunChunk__Output as _swarm_v1_SubmitRunChunk__Output } from '../../swarm/v1/SubmitRunChunk.js';
import type { SubmitRunRequest as _swarm_v1_SubmitRunRequest, SubmitRunRequest__Output as _swarm_v1_SubmitRunRequest__Output } from '../../swarm/v1/SubmitRunRequest.js';
import type { SubmitRunResponse as _swarm_v1_SubmitRunResponse, SubmitRunResponse__Output as _swarm_v1_SubmitRunResponse__Output } from '../../swarm/v1/SubmitRunResponse.js';
import type { WatchRunRequest as _swarm_v1_WatchRunRequest, WatchRunRequest__Output as _swarm_v1_WatchRunRequest__Output } from '../../swarm/v1/WatchRunRequest.js';

export interface SwarmServiceClient extends grpc.Client {
  CancelRun(argument: _swarm_v1_CancelRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  CancelRun(argument: _swarm_v1_CancelRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  CancelRun(argument: _swarm_v1_CancelRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  CancelRun(argument: _swarm_v1_CancelRunRequest, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  cancelRun(argument: _swarm_v1_CancelRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  cancelRun(argument: _swarm_v1_CancelRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  cancelRun(argument: _swarm_v1_CancelRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  cancelRun(argument: _swarm_v1_CancelRunRequest, callback: grpc.requestCallback<_swarm_v1_CancelRunResponse__Output>): grpc.ClientUnaryCall;
  
  ForkRun(argument: _swarm_v1_ForkRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  ForkRun(argument: _swarm_v1_ForkRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  ForkRun(argument: _swarm_v1_ForkRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  ForkRun(argument: _swarm_v1_ForkRunRequest, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  forkRun(argument: _swarm_v1_ForkRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  forkRun(argument: _swarm_v1_ForkRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  forkRun(argument: _swarm_v1_ForkRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  forkRun(argument: _swarm_v1_ForkRunRequest, callback: grpc.requestCallback<_swarm_v1_ForkRunResponse__Output>): grpc.ClientUnaryCall;
  
  GetArtifact(argument: _swarm_v1_GetArtifactRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_ArtifactChunk__Output>;
  GetArtifact(argument: _swarm_v1_GetArtifactRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_ArtifactChunk__Output>;
  getArtifact(argument: _swarm_v1_GetArtifactRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_ArtifactChunk__Output>;
  getArtifact(argument: _swarm_v1_GetArtifactRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_ArtifactChunk__Output>;
  
  GetRun(argument: _swarm_v1_GetRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  GetRun(argument: _swarm_v1_GetRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  GetRun(argument: _swarm_v1_GetRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  GetRun(argument: _swarm_v1_GetRunRequest, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  getRun(argument: _swarm_v1_GetRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  getRun(argument: _swarm_v1_GetRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  getRun(argument: _swarm_v1_GetRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  getRun(argument: _swarm_v1_GetRunRequest, callback: grpc.requestCallback<_swarm_v1_GetRunResponse__Output>): grpc.ClientUnaryCall;
  
  GetTranscript(argument: _swarm_v1_GetTranscriptRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  GetTranscript(argument: _swarm_v1_GetTranscriptRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  GetTranscript(argument: _swarm_v1_GetTranscriptRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  GetTranscript(argument: _swarm_v1_GetTranscriptRequest, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  getTranscript(argument: _swarm_v1_GetTranscriptRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  getTranscript(argument: _swarm_v1_GetTranscriptRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  getTranscript(argument: _swarm_v1_GetTranscriptRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  getTranscript(argument: _swarm_v1_GetTranscriptRequest, callback: grpc.requestCallback<_swarm_v1_GetTranscriptResponse__Output>): grpc.ClientUnaryCall;
  
  ListRuns(argument: _swarm_v1_ListRunsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  ListRuns(argument: _swarm_v1_ListRunsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  ListRuns(argument: _swarm_v1_ListRunsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  ListRuns(argument: _swarm_v1_ListRunsRequest, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  listRuns(argument: _swarm_v1_ListRunsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  listRuns(argument: _swarm_v1_ListRunsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  listRuns(argument: _swarm_v1_ListRunsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  listRuns(argument: _swarm_v1_ListRunsRequest, callback: grpc.requestCallback<_swarm_v1_ListRunsResponse__Output>): grpc.ClientUnaryCall;
  
  ListWorkers(argument: _swarm_v1_ListWorkersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  ListWorkers(argument: _swarm_v1_ListWorkersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  ListWorkers(argument: _swarm_v1_ListWorkersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  ListWorkers(argument: _swarm_v1_ListWorkersRequest, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  listWorkers(argument: _swarm_v1_ListWorkersRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  listWorkers(argument: _swarm_v1_ListWorkersRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  listWorkers(argument: _swarm_v1_ListWorkersRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  listWorkers(argument: _swarm_v1_ListWorkersRequest, callback: grpc.requestCallback<_swarm_v1_ListWorkersResponse__Output>): grpc.ClientUnaryCall;
  
  SignalRun(argument: _swarm_v1_SignalRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  SignalRun(argument: _swarm_v1_SignalRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  SignalRun(argument: _swarm_v1_SignalRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  SignalRun(argument: _swarm_v1_SignalRunRequest, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  signalRun(argument: _swarm_v1_SignalRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  signalRun(argument: _swarm_v1_SignalRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  signalRun(argument: _swarm_v1_SignalRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  signalRun(argument: _swarm_v1_SignalRunRequest, callback: grpc.requestCallback<_swarm_v1_SignalRunResponse__Output>): grpc.ClientUnaryCall;
  
  SubmitRun(argument: _swarm_v1_SubmitRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  SubmitRun(argument: _swarm_v1_SubmitRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  SubmitRun(argument: _swarm_v1_SubmitRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  SubmitRun(argument: _swarm_v1_SubmitRunRequest, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  submitRun(argument: _swarm_v1_SubmitRunRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  submitRun(argument: _swarm_v1_SubmitRunRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  submitRun(argument: _swarm_v1_SubmitRunRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  submitRun(argument: _swarm_v1_SubmitRunRequest, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientUnaryCall;
  
  SubmitRunChunked(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  SubmitRunChunked(metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  SubmitRunChunked(options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  SubmitRunChunked(callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  submitRunChunked(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  submitRunChunked(metadata: grpc.Metadata, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  submitRunChunked(options: grpc.CallOptions, callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  submitRunChunked(callback: grpc.requestCallback<_swarm_v1_SubmitRunResponse__Output>): grpc.ClientWritableStream<_swarm_v1_SubmitRunChunk>;
  
  WatchRun(argument: _swarm_v1_WatchRunRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_RunEvent__Output>;
  WatchRun(argument: _swarm_v1_WatchRunRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_RunEvent__Output>;
  watchRun(argument: _swarm_v1_WatchRunRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_RunEvent__Output>;
  watchRun(argument: _swarm_v1_WatchRunRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_swarm_v1_RunEvent__Output>;
  
}

export interface SwarmServiceHandlers extends grpc.UntypedServiceImplementation {
  CancelRun: grpc.handleUnaryCall<_swarm_v1_CancelRunRequest__Output, _swarm_v1_CancelRunResponse>;
  
  ForkRun: grpc.handleUnaryCall<_swarm_v1_ForkRunRequest__Output, _swarm_v1_ForkRunResponse>;
  
  GetArtifact: grpc.handleServerStreamingCall<_swarm_v1_GetArtifactRequest__Output, _swarm_v1_ArtifactChunk>;
  
  GetRun: grpc.handleUnaryCall<_swarm_v1_GetRunRequest__Output, _swarm_v1_GetRunResponse>;
  
  GetTranscript: grpc.handleUnaryCall<_swarm_v1_GetTranscriptRequest__Output, _swarm_v1_GetTranscriptResponse>;
  
  ListRuns: grpc.handleUnaryCall<_swarm_v1_ListRunsRequest__Output, _swarm_v1_ListRunsResponse>;
  
  ListWorkers: grpc.handleUnaryCall<_swarm_v1_ListWorkersRequest__Output, _swarm_v1_ListWorkersResponse>;
  
  SignalRun: grpc.handleUnaryCall<_swarm_v1_SignalRunRequest__Output, _swarm_v1_SignalRunResponse>;
  
  SubmitRun: grpc.handleUnaryCall<_swarm_v1_SubmitRunRequest__Output, _swarm_v1_SubmitRunResponse>;
  
  SubmitRunChunked: grpc.handleClientStreamingCall<_swarm_v1_SubmitRunChunk__Output, _swarm_v1_SubmitRunResponse>;
  
  WatchRun: grpc.handleServerStreamingCall<_swarm_v1_WatchRunRequest__Output, _swarm_v1_RunEvent>;
  
}

export interface SwarmServiceDefinition extends grpc.ServiceDefinition {
  CancelRun: MethodDefinition<_swarm_v1_CancelRunRequest, _swarm_v1_CancelRunResponse, _swarm_v1_CancelRunRequest__Output, _swarm_v1_CancelRunResponse__Output>
  ForkRun: MethodDefinition<_swarm_v1_ForkRunRequest, _swarm_v1_ForkRunResponse, _swarm_v1_ForkRunRequest__Output, _swarm_v1_ForkRunResponse__Output>
  GetArtifact: MethodDefinition<_swarm_v1_GetArtifactRequest, _swarm_v1_ArtifactChunk, _swarm_v1_GetArtifactRequest__Output, _swarm_v1_ArtifactChunk__Output>
  GetRun: MethodDefinition<_swarm_v1_GetRunRequest, _swarm_v1_GetRunResponse, _swarm_v1_GetRunRequest__Output, _swarm_v1_GetRunResponse__Output>
  GetTranscript: MethodDefinition<_swarm_v1_GetTranscriptRequest, _swarm_v1_GetTranscriptResponse, _swarm_v1_GetTranscriptRequest__Output, _swarm_v1_GetTranscriptResponse__Output>
  ListRuns: MethodDefinition<_swarm_v1_ListRunsRequest, _swarm_v1_ListRunsResponse, _swarm_v1_ListRunsRequest__Output, _swarm_v1_ListRunsResponse__Output>
  ListWorkers: MethodDefinition<_swarm_v1_ListWorkersRequest, _swarm_v1_ListWorkersResponse, _swarm_v1_ListWorkersRequest__Output, _swarm_v1_ListWorkersResponse__Output>
  SignalRun: MethodDefinition<_swarm_v1_SignalRunRequest, _swarm_v1_SignalRunResponse, _swarm_v1_SignalRunRequest__Output, _swarm_v1_SignalRunResponse__Output>
  SubmitRun: MethodDefinition<_swarm_v1_SubmitRunRequest, _swarm_v1_SubmitRunResponse, _swarm_v1_SubmitRunRequest__Output, _swarm_v1_SubmitRunResponse__Output>
  SubmitRunChunked: MethodDefinition<_swarm_v1_SubmitRunChunk, _swarm_v1_SubmitRunResponse, _swarm_v1_SubmitRunChunk__Output, _swarm_v1_SubmitRunResponse__Output>
  WatchRun: MethodDefinition<_swarm_v1_WatchRunRequest, _swarm_v1_RunEvent, _swarm_v1_WatchRunRequest__Output, _swarm_v1_RunEvent__Output>
}
