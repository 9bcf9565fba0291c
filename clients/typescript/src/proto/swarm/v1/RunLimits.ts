// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface RunLimits {
  'maxSubagents'?: (number);
  'maxToolCalls'?: (number);
  'orchestratorMaxSteps'?: (number);
  'subagentMaxSteps'?: (number);
  'maxTokens'?: (number | string | Long);
  '_maxSubagents'?: "maxSubagents";
  '_maxToolCalls'?: "maxToolCalls";
  '_orchestratorMaxSteps'?: "orchestratorMaxSteps";
  '_subagentMaxSteps'?: "subagentMaxSteps";
  '_maxTokens'?: "maxTokens";
}

export interface RunLimits__Output {
  'maxSubagents'?: (number);
  'maxToolCalls'?: (number);
  'orchestratorMaxSteps'?: (number);
  'subagentMaxSteps'?: (number);
  'maxTokens'?: (number);
  '_maxSubagents'?: "maxSubagents";
  '_maxToolCalls'?: "maxToolCalls";
  '_orchestratorMaxSteps'?: "orchestratorMaxSteps";
  '_subagentMaxSteps'?: "subagentMaxSteps";
  '_maxTokens'?: "maxTokens";
}
