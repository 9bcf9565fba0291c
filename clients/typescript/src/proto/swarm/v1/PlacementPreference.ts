// Original file: proto/swarm/v1/swarm.proto


export interface PlacementPreference {
  'labels'?: ({[key: string]: string});
  'weight'?: (number);
  '_weight'?: "weight";
}

export interface PlacementPreference__Output {
  'labels': ({[key: string]: string});
  'weight'?: (number);
  '_weight'?: "weight";
}
