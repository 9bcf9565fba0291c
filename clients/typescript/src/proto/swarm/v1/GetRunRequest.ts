// Original file: proto/swarm/v1/swarm.proto


export interface GetRunRequest {
  'runId'?: (string);
  'includeSubtasks'?: (boolean);
  'pageSize'?: (number);
  'pageToken'?: (string);
}

export interface GetRunRequest__Output {
  'runId': (string);
  'includeSubtasks': (boolean);
  'pageSize': (number);
  'pageToken': (string);
}
