// Original file: proto/swarm/v1/swarm.proto


export interface SubtaskOutputs {
  'artifacts'?: (string)[];
}

export interface SubtaskOutputs__Output {
  'artifacts': (string)[];
}
