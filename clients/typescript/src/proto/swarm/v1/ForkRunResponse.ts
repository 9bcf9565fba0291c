// Original file: proto/swarm/v1/swarm.proto


export interface ForkRunResponse {
  'runId'?: (string);
  'reused'?: (number);
  'rerun'?: (number);
  'created'?: (boolean);
}

export interface ForkRunResponse__Output {
  'runId': (string);
  'reused': (number);
  'rerun': (number);
  'created': (boolean);
}
