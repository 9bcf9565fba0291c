// Original file: proto/swarm/v1/swarm.proto


export interface GetTranscriptRequest {
  'runId'?: (string);
  'subtaskId'?: (string);
}

export interface GetTranscriptRequest__Output {
  'runId': (string);
  'subtaskId': (string);
}
