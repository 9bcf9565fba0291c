// Original file: proto/swarm/v1/swarm.proto


export interface ForkRunRequest {
  'runId'?: (string);
  'fromSubtask'?: (string);
  'patch'?: (string);
  'fromStep'?: (number);
  'idempotencyKey'?: (string);
  '_fromStep'?: "fromStep";
}

export interface ForkRunRequest__Output {
  'runId': (string);
  'fromSubtask': (string);
  'patch': (string);
  'fromStep'?: (number);
  'idempotencyKey': (string);
  '_fromStep'?: "fromStep";
}
