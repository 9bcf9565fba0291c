// Original file: proto/swarm/v1/swarm.proto


export interface GetArtifactRequest {
  'runId'?: (string);
  'subtaskId'?: (string);
  'path'?: (string);
}

export interface GetArtifactRequest__Output {
  'runId': (string);
  'subtaskId': (string);
  'path': (string);
}
