// Original file: proto/swarm/v1/swarm.proto

import type { PlacementPreference as _swarm_v1_PlacementPreference, PlacementPreference__Output as _swarm_v1_PlacementPreference__Output } from '../../swarm/v1/PlacementPreference.js';

export interface Placement {
  'labels'?: ({[key: string]: string});
  'avoid'?: ({[key: string]: string});
  'prefer'?: (_swarm_v1_PlacementPreference)[];
  'resources'?: ({[key: string]: string});
}

export interface Placement__Output {
  'labels': ({[key: string]: string});
  'avoid': ({[key: string]: string});
  'prefer': (_swarm_v1_PlacementPreference__Output)[];
  'resources': ({[key: string]: string});
}
