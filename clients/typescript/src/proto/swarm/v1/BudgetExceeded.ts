// Original file: proto/swarm/v1/swarm.proto


export interface BudgetExceeded {
  'what'?: (string);
}

export interface BudgetExceeded__Output {
  'what': (string);
}
