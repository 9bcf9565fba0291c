// Original file: proto/swarm/v1/swarm.proto


export interface ToolFinished {
  'tool'?: (string);
  'failed'?: (boolean);
}

export interface ToolFinished__Output {
  'tool': (string);
  'failed': (boolean);
}
