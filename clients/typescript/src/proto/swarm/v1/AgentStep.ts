// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface AgentStep {
  'subtaskId'?: (string);
  'steps'?: (number);
  'toolCalls'?: (number);
  'criticalSteps'?: (number | string | Long);
  'totalSteps'?: (number | string | Long);
}

export interface AgentStep__Output {
  'subtaskId': (string);
  'steps': (number);
  'toolCalls': (number);
  'criticalSteps': (number);
  'totalSteps': (number);
}
