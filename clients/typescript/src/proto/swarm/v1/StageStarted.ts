// Original file: proto/swarm/v1/swarm.proto


export interface StageStarted {
  'subtaskId'?: (string);
  'stage'?: (number);
  'subagentIds'?: (string)[];
  'refused'?: (number);
}

export interface StageStarted__Output {
  'subtaskId': (string);
  'stage': (number);
  'subagentIds': (string)[];
  'refused': (number);
}
