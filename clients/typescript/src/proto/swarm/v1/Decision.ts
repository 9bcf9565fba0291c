// Original file: proto/swarm/v1/swarm.proto

export const Decision = {
  DECISION_UNSPECIFIED: 'DECISION_UNSPECIFIED',
  APPROVE: 'APPROVE',
  REJECT: 'REJECT',
} as const;

export type Decision =
  | 'DECISION_UNSPECIFIED'
  | 0
  | 'APPROVE'
  | 1
  | 'REJECT'
  | 2

export type Decision__Output = typeof Decision[keyof typeof Decision]
