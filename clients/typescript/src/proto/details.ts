import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { Any as _google_protobuf_Any, Any__Output as _google_protobuf_Any__Output } from './google/protobuf/Any.js';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from './google/protobuf/Duration.js';
import type { BadRequest as _swarm_client_rpc_BadRequest, BadRequest__Output as _swarm_client_rpc_BadRequest__Output } from './swarm/client/rpc/BadRequest.js';
import type { ErrorInfo as _swarm_client_rpc_ErrorInfo, ErrorInfo__Output as _swarm_client_rpc_ErrorInfo__Output } from './swarm/client/rpc/ErrorInfo.js';
import type { RetryInfo as _swarm_client_rpc_RetryInfo, RetryInfo__Output as _swarm_client_rpc_RetryInfo__Output } from './swarm/client/rpc/RetryInfo.js';
import type { Status as _swarm_client_rpc_Status, Status__Output as _swarm_client_rpc_Status__Output } from './swarm/client/rpc/Status.js';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    protobuf: {
      Any: MessageTypeDefinition<_google_protobuf_Any, _google_protobuf_Any__Output>
      Duration: MessageTypeDefinition<_google_protobuf_Duration, _google_protobuf_Duration__Output>
    }
  }
  swarm: {
    client: {
      rpc: {
        BadRequest: MessageTypeDefinition<_swarm_client_rpc_BadRequest, _swarm_client_rpc_BadRequest__Output>
        ErrorInfo: MessageTypeDefinition<_swarm_client_rpc_ErrorInfo, _swarm_client_rpc_ErrorInfo__Output>
        RetryInfo: MessageTypeDefinition<_swarm_client_rpc_RetryInfo, _swarm_client_rpc_RetryInfo__Output>
        Status: MessageTypeDefinition<_swarm_client_rpc_Status, _swarm_client_rpc_Status__Output>
      }
    }
  }
}

