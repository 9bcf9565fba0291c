// Original file: proto/swarm/v1/swarm.proto


export interface GetTranscriptResponse {
  'turnsJson'?: (string);
  'agentJson'?: (string);
}

export interface GetTranscriptResponse__Output {
  'turnsJson': (string);
  'agentJson': (string);
}
