// The SPIFFE Workload API's gRPC contract (the standard's proto), shared by the server and the client, so
// a client never loads the server or its native addon.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { sourceDir } from '../source-dir.js';

/** The metadata every Workload API request carries (the standard's security header). */
export const SECURITY_HEADER = 'workload.spiffe.io';

export function loadWorkloadApi(): grpc.GrpcObject {
  const def = protoLoader.loadSync(join(sourceDir(import.meta.url), 'workload.proto'), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def);
}
