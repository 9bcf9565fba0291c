// Original file: proto/swarm/v1/swarm.proto


export interface ListWorkersRequest {
}

export interface ListWorkersRequest__Output {
}
