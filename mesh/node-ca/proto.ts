// The node CA's gRPC contract, shared by its server (apiserver/node-ca) and its clients (node agents), so a
// client never loads the server.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { sourceDir } from '../../mtls/source-dir.js';
export type { PodRef } from '../kube/names.js';

/** The name in the node CA's serving certificate that agents verify (its address moves with the pod). */
export const NODE_CA_NAME = 'skein-apiserver.skein-system.svc';

export function loadNodeCaApi(): grpc.GrpcObject {
  const def = protoLoader.loadSync(join(sourceDir(import.meta.url), 'node-ca.proto'), { keepCase: true, longs: Number, defaults: true });
  return grpc.loadPackageDefinition(def);
}
