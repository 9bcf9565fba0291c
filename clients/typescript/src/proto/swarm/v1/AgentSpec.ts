// Original file: proto/swarm/v1/swarm.proto


export interface AgentSpec {
  'instructions'?: (string);
  'input'?: (string);
  'model'?: (string);
  'tools'?: (string)[];
  'maxSteps'?: (number);
  '_maxSteps'?: "maxSteps";
}

export interface AgentSpec__Output {
  'instructions': (string);
  'input': (string);
  'model': (string);
  'tools': (string)[];
  'maxSteps'?: (number);
  '_maxSteps'?: "maxSteps";
}
