// Original file: proto/swarm/v1/swarm.proto

import type { WorkerInfo as _swarm_v1_WorkerInfo, WorkerInfo__Output as _swarm_v1_WorkerInfo__Output } from '../../swarm/v1/WorkerInfo.js';

export interface ListWorkersResponse {
  'workers'?: (_swarm_v1_WorkerInfo)[];
}

export interface ListWorkersResponse__Output {
  'workers': (_swarm_v1_WorkerInfo__Output)[];
}
