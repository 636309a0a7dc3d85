// A Workload API client for Skein's own workloads and tests (third-party SPIFFE clients work unchanged).
import * as grpc from '@grpc/grpc-js';
import { loadWorkloadApi, SECURITY_HEADER } from './proto.js';

export interface X509Context {
  svids: { spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer }[];
  federated_bundles: Record<string, Buffer>;
}

type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & Record<string, (...a: unknown[]) => unknown>;

export function workloadApiClient(socket: string): grpc.Client & Record<string, (...a: unknown[]) => unknown> {
  const api = loadWorkloadApi() as unknown as { SpiffeWorkloadAPI: Ctor };
  const address = socket.startsWith('unix:') ? socket : `unix://${socket}`;
  return new api.SpiffeWorkloadAPI(address, grpc.credentials.createInsecure());
}

export function securityHeader(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(SECURITY_HEADER, 'true');
  return md;
}

/** Follows FetchX509SVID: calls `onUpdate` with every response until `stop()` is called. */
export function watchX509Context(socket: string, onUpdate: (ctx: X509Context) => void, onError: (err: grpc.ServiceError) => void, metadata = securityHeader()): { stop: () => void } {
  const client = workloadApiClient(socket);
  const call = client.FetchX509SVID!({}, metadata) as grpc.ClientReadableStream<X509Context>;
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
