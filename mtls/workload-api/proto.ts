// The SPIFFE Workload API's gRPC contract (the standard's proto), shared by the server and the client, so
// a client never loads the server or its native addon. Message and service types are generated from
// workload.proto (`npm run gen:proto` writes generated/).
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { sourceDir } from '../source-dir.js';
import type { ProtoGrpcType } from './generated/workload.js';
export type { SpiffeWorkloadAPIClient, SpiffeWorkloadAPIHandlers } from './generated/SpiffeWorkloadAPI.js';
export type { X509SVIDResponse, X509SVIDResponse__Output } from './generated/X509SVIDResponse.js';
export type { Struct } from './generated/google/protobuf/Struct.js';
export type { Value } from './generated/google/protobuf/Value.js';

/** The metadata every Workload API request carries (the standard's security header). */
export const SECURITY_HEADER = 'workload.spiffe.io';

/** The options the generated types were made with (`npm run gen:proto`): keep the two in step. */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export function loadWorkloadApi(): ProtoGrpcType {
  const def = protoLoader.loadSync(join(sourceDir(import.meta.url), 'workload.proto'), LOADER_OPTIONS);
  // loadPackageDefinition is untyped by design; the generated ProtoGrpcType is its shape for this proto.
  return grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
}
