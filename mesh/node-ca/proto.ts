// The node CA's gRPC contract, shared by its server (apiserver/node-ca) and its clients (node agents), so a
// client never loads the server. Message and service types are generated from node-ca.proto
// (`npm run gen:proto` writes generated/).
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { sourceDir } from '../../mtls/source-dir.js';
import type { ProtoGrpcType } from './generated/node-ca.js';
export type { NodeCAClient } from './generated/skein/v1/NodeCA.js';
export type { NodeCAHandlers } from './generated/skein/v1/NodeCA.js';
export type { PodRef } from '../kube/names.js';

/** The name in the node CA's serving certificate that agents verify (its address moves with the pod). */
export const NODE_CA_NAME = 'skein-apiserver.skein-system.svc';

/** The options the generated types were made with (`npm run gen:proto`): keep the two in step. */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export function loadNodeCaApi(): ProtoGrpcType['skein']['v1'] {
  const def = protoLoader.loadSync(join(sourceDir(import.meta.url), 'node-ca.proto'), LOADER_OPTIONS);
  // loadPackageDefinition is untyped by design; the generated ProtoGrpcType is its shape for this proto.
  return (grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType).skein.v1;
}
