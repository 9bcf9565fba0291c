// Original file: proto/swarm/v1/swarm.proto


export interface ListRunsRequest {
  'pageSize'?: (number);
  'pageToken'?: (string);
  'specVersion'?: (string);
}

export interface ListRunsRequest__Output {
  'pageSize': (number);
  'pageToken': (string);
  'specVersion': (string);
}
