// Original file: proto/swarm/v1/swarm.proto

import type { Placement as _swarm_v1_Placement, Placement__Output as _swarm_v1_Placement__Output } from '../../swarm/v1/Placement.js';

export interface OrchestratorSpec {
  'goal'?: (string);
  'model'?: (string);
  'tools'?: (string)[];
  'maxSteps'?: (number);
  'subagentTools'?: (string)[];
  'subagentModels'?: (string)[];
  'subagentArtifacts'?: (string)[];
  'subagentPlacement'?: (_swarm_v1_Placement | null);
  '_maxSteps'?: "maxSteps";
}

export interface OrchestratorSpec__Output {
  'goal': (string);
  'model': (string);
  'tools': (string)[];
  'maxSteps'?: (number);
  'subagentTools': (string)[];
  'subagentModels': (string)[];
  'subagentArtifacts': (string)[];
  'subagentPlacement': (_swarm_v1_Placement__Output | null);
  '_maxSteps'?: "maxSteps";
}
