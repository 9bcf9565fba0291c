// Original file: proto/swarm/v1/swarm.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration.js';

export interface WallBreakdown {
  'work'?: (_google_protobuf_Duration | null);
  'waitingForSlot'?: (_google_protobuf_Duration | null);
  'dispatch'?: (_google_protobuf_Duration | null);
  'retryBackoff'?: (_google_protobuf_Duration | null);
  'failedAttempts'?: (_google_protobuf_Duration | null);
  'stragglerWait'?: (_google_protobuf_Duration | null);
  'other'?: (_google_protobuf_Duration | null);
  'biggestLossPart'?: (string);
  'biggestLossSubtask'?: (string);
  'biggestLoss'?: (_google_protobuf_Duration | null);
  'headline'?: (string);
  'waitingForApproval'?: (_google_protobuf_Duration | null);
  'waitingForPlacement'?: (_google_protobuf_Duration | null);
}

export interface WallBreakdown__Output {
  'work': (_google_protobuf_Duration__Output | null);
  'waitingForSlot': (_google_protobuf_Duration__Output | null);
  'dispatch': (_google_protobuf_Duration__Output | null);
  'retryBackoff': (_google_protobuf_Duration__Output | null);
  'failedAttempts': (_google_protobuf_Duration__Output | null);
  'stragglerWait': (_google_protobuf_Duration__Output | null);
  'other': (_google_protobuf_Duration__Output | null);
  'biggestLossPart': (string);
  'biggestLossSubtask': (string);
  'biggestLoss': (_google_protobuf_Duration__Output | null);
  'headline': (string);
  'waitingForApproval': (_google_protobuf_Duration__Output | null);
  'waitingForPlacement': (_google_protobuf_Duration__Output | null);
}
