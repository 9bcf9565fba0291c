// Original file: proto/swarm/v1/swarm.proto


export interface SubtaskSkipped {
  'subtaskId'?: (string);
  'because'?: (string);
}

export interface SubtaskSkipped__Output {
  'subtaskId': (string);
  'because': (string);
}
