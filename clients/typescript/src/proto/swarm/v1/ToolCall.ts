// Original file: proto/swarm/v1/swarm.proto


export interface ToolCall {
  'tool'?: (string);
  'argsJson'?: (string);
}

export interface ToolCall__Output {
  'tool': (string);
  'argsJson': (string);
}
