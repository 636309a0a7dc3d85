// A Workload API client for Skein's own workloads and tests (third-party SPIFFE clients work unchanged).
import * as grpc from '@grpc/grpc-js';
import { loadWorkloadApi, SECURITY_HEADER, type SpiffeWorkloadAPIClient, type X509SVIDResponse__Output } from './proto.js';

/** What FetchX509SVID streams: the caller's SVIDs and the bundles of federated trust domains. */
export type X509Context = X509SVIDResponse__Output;

export function workloadApiClient(socket: string): SpiffeWorkloadAPIClient {
  const address = socket.startsWith('unix:') ? socket : `unix://${socket}`;
  return new (loadWorkloadApi().SpiffeWorkloadAPI)(address, grpc.credentials.createInsecure());
}

export function securityHeader(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(SECURITY_HEADER, 'true');
  return md;
}

/** Follows FetchX509SVID: calls `onUpdate` with every response until `stop()` is called. */
export function watchX509Context(socket: string, onUpdate: (ctx: X509Context) => void, onError: (err: grpc.ServiceError) => void, metadata = securityHeader()): { stop: () => void } {
  const client = workloadApiClient(socket);
  const call = client.FetchX509SVID({}, metadata);
  call.on('data', onUpdate);
  call.on('error', (err: grpc.ServiceError) => {
    if (err.code !== grpc.status.CANCELLED) onError(err);
  });
  return {
    stop: () => {
      call.cancel();
      client.close();
    },
  };
}
