// Original file: proto/swarm/v1/swarm.proto


export interface RunStarted {
  'name'?: (string);
  'totalSubtasks'?: (number);
}

export interface RunStarted__Output {
  'name': (string);
  'totalSubtasks': (number);
}
