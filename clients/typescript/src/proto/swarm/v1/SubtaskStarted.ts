// Original file: proto/swarm/v1/swarm.proto


export interface SubtaskStarted {
  'subtaskId'?: (string);
  'attempt'?: (number);
  'workerId'?: (string);
}

export interface SubtaskStarted__Output {
  'subtaskId': (string);
  'attempt': (number);
  'workerId': (string);
}
