// Original file: proto/swarm/v1/swarm.proto

import type { Run as _swarm_v1_Run, Run__Output as _swarm_v1_Run__Output } from '../../swarm/v1/Run.js';

export interface ListRunsResponse {
  'runs'?: (_swarm_v1_Run)[];
  'nextPageToken'?: (string);
}

export interface ListRunsResponse__Output {
  'runs': (_swarm_v1_Run__Output)[];
  'nextPageToken': (string);
}
