// Original file: proto/swarm/v1/swarm.proto


export interface ArtifactChunk {
  'data'?: (Buffer | Uint8Array | string);
}

export interface ArtifactChunk__Output {
  'data': (Buffer);
}
