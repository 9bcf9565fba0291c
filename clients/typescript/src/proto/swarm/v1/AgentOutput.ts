// Original file: proto/swarm/v1/swarm.proto

import type { ToolFinished as _swarm_v1_ToolFinished, ToolFinished__Output as _swarm_v1_ToolFinished__Output } from '../../swarm/v1/ToolFinished.js';
import type { Long } from '@grpc/proto-loader';

export interface AgentOutput {
  'subtaskId'?: (string);
  'attempt'?: (number);
  'turn'?: (number);
  'text'?: (string);
  'reasoning'?: (string);
  'offset'?: (number | string | Long);
  'toolsStarted'?: (string)[];
  'toolsFinished'?: (_swarm_v1_ToolFinished)[];
  'outputSeq'?: (number | string | Long);
  'outputEpoch'?: (number | string | Long);
}

export interface AgentOutput__Output {
  'subtaskId': (string);
  'attempt': (number);
  'turn': (number);
  'text': (string);
  'reasoning': (string);
  'offset': (number);
  'toolsStarted': (string)[];
  'toolsFinished': (_swarm_v1_ToolFinished__Output)[];
  'outputSeq': (number);
  'outputEpoch': (number);
}
