// Original file: proto/swarm/v1/swarm.proto

import type { RunState as _swarm_v1_RunState, RunState__Output as _swarm_v1_RunState__Output } from '../../swarm/v1/RunState.js';
import type { RunSummary as _swarm_v1_RunSummary, RunSummary__Output as _swarm_v1_RunSummary__Output } from '../../swarm/v1/RunSummary.js';

export interface RunFinished {
  'state'?: (_swarm_v1_RunState);
  'summary'?: (_swarm_v1_RunSummary | null);
}

export interface RunFinished__Output {
  'state': (_swarm_v1_RunState__Output);
  'summary': (_swarm_v1_RunSummary__Output | null);
}
