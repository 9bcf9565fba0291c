// Original file: proto/swarm/v1/swarm.proto

import type { Run as _swarm_v1_Run, Run__Output as _swarm_v1_Run__Output } from '../../swarm/v1/Run.js';

export interface CancelRunResponse {
  'run'?: (_swarm_v1_Run | null);
}

export interface CancelRunResponse__Output {
  'run': (_swarm_v1_Run__Output | null);
}
