// Original file: proto/swarm/client/rpc/details.proto


export interface _swarm_client_rpc_BadRequest_FieldViolation {
  'field'?: (string);
  'description'?: (string);
}

export interface _swarm_client_rpc_BadRequest_FieldViolation__Output {
  'field': (string);
  'description': (string);
}

export interface BadRequest {
  'fieldViolations'?: (_swarm_client_rpc_BadRequest_FieldViolation)[];
}

export interface BadRequest__Output {
  'fieldViolations': (_swarm_client_rpc_BadRequest_FieldViolation__Output)[];
}
