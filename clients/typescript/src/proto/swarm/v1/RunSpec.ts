// Original file: proto/swarm/v1/swarm.proto

import type { SubtaskSpec as _swarm_v1_SubtaskSpec, SubtaskSpec__Output as _swarm_v1_SubtaskSpec__Output } from '../../swarm/v1/SubtaskSpec.js';
import type { RunLimits as _swarm_v1_RunLimits, RunLimits__Output as _swarm_v1_RunLimits__Output } from '../../swarm/v1/RunLimits.js';
import type { Speculation as _swarm_v1_Speculation, Speculation__Output as _swarm_v1_Speculation__Output } from '../../swarm/v1/Speculation.js';
import type { RetryPolicy as _swarm_v1_RetryPolicy, RetryPolicy__Output as _swarm_v1_RetryPolicy__Output } from '../../swarm/v1/RetryPolicy.js';
import type { Long } from '@grpc/proto-loader';

export interface RunSpec {
  'name'?: (string);
  'subtasks'?: (_swarm_v1_SubtaskSpec)[];
  'limits'?: (_swarm_v1_RunLimits | null);
  'speculation'?: (_swarm_v1_Speculation | null);
  'retry'?: (_swarm_v1_RetryPolicy | null);
  'toolRetry'?: ({[key: string]: _swarm_v1_RetryPolicy});
  'maxConcurrency'?: (number);
  'scheduleToStartMs'?: (number | string | Long);
  'priority'?: (number);
  'version'?: (string);
}

export interface RunSpec__Output {
  'name': (string);
  'subtasks': (_swarm_v1_SubtaskSpec__Output)[];
  'limits': (_swarm_v1_RunLimits__Output | null);
  'speculation': (_swarm_v1_Speculation__Output | null);
  'retry': (_swarm_v1_RetryPolicy__Output | null);
  'toolRetry': ({[key: string]: _swarm_v1_RetryPolicy__Output});
  'maxConcurrency': (number);
  'scheduleToStartMs': (number);
  'priority': (number);
  'version': (string);
}
