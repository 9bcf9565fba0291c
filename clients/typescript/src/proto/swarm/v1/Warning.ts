// Original file: proto/swarm/v1/swarm.proto


export interface Warning {
  'subtaskId'?: (string);
  'message'?: (string);
}

export interface Warning__Output {
  'subtaskId': (string);
  'message': (string);
}
