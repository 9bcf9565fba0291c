// Original file: proto/swarm/v1/swarm.proto


export interface CancelRunRequest {
  'runId'?: (string);
  'reason'?: (string);
}

export interface CancelRunRequest__Output {
  'runId': (string);
  'reason': (string);
}
