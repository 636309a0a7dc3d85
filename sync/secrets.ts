// What `skein connect` stores in each cluster's skein-system namespace, validated when read.
//   skein-remote-<peer>  (label skein.io/remote=<peer>): how to read the peer's export: endpoint, the peer's
//                        CA, and a client identity the peer's CA signed for us.
//   skein-peer-<peer>    (label skein.io/peer=<peer>): the peer may read our export (its etcd user).
import { z } from 'zod';
import { ClusterName } from '../apiserver/schema/cluster.js';

export const REMOTE_LABEL = 'skein.io/remote';
export const PEER_LABEL = 'skein.io/peer';
export const remoteSecretName = (peer: string) => `skein-remote-${peer}`;
export const peerSecretName = (peer: string) => `skein-peer-${peer}`;

export const RemoteSecret = z.object({
  cluster: ClusterName,
  id: z.string().regex(/^\d+$/),
  endpoint: z.string().regex(/^https:\/\/[^/\s]+$/, 'endpoint must be https://HOST:PORT'),
  'ca.crt': z.string().includes('BEGIN CERTIFICATE'),
  'tls.crt': z.string().includes('BEGIN CERTIFICATE'),
  'tls.key': z.string().includes('PRIVATE KEY'),
  'trust-domain': z.string(),
});
export type RemoteSecret = z.infer<typeof RemoteSecret>;

export const PeerSecret = z.object({ cluster: ClusterName });
