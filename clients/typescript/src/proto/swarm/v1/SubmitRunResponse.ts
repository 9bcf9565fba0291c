// Original file: proto/swarm/v1/swarm.proto


export interface SubmitRunResponse {
  'runId'?: (string);
  'created'?: (boolean);
}

export interface SubmitRunResponse__Output {
  'runId': (string);
  'created': (boolean);
}
