// Original file: proto/swarm/v1/swarm.proto

import type { Long } from '@grpc/proto-loader';

export interface Speculation {
  'disabled'?: (boolean);
  'quantile'?: (number | string);
  'multiplier'?: (number | string);
  'minRuntimeMs'?: (number | string | Long);
  'maxFraction'?: (number | string);
  '_quantile'?: "quantile";
  '_multiplier'?: "multiplier";
  '_minRuntimeMs'?: "minRuntimeMs";
  '_maxFraction'?: "maxFraction";
}

export interface Speculation__Output {
  'disabled': (boolean);
  'quantile'?: (number);
  'multiplier'?: (number);
  'minRuntimeMs'?: (number);
  'maxFraction'?: (number);
  '_quantile'?: "quantile";
  '_multiplier'?: "multiplier";
  '_minRuntimeMs'?: "minRuntimeMs";
  '_maxFraction'?: "maxFraction";
}
