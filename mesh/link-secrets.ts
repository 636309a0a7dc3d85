// What `skein connect` stores in each cluster's skein-system namespace, validated when read.
//   skein-remote-<peer>  (label skein.io/remote=<peer>): how to read the peer's export: endpoint, the peer's
//                        mesh CA, its trust bundle (workload CA), and a client identity its mesh CA signed;
//                        and the pin: the peer's cluster ID and pod CIDRs as connect saw them, all the peer
//                        may ever claim (sync/address-policy.ts). Only running skein connect again re-pins.
//   skein-peer-<peer>    (label skein.io/peer=<peer>): the peer may read our export (its etcd user).
import { z } from 'zod';
import { ClusterId, ClusterName } from './schema/cluster.js';
import { pinError } from './address-policy.js';

export const REMOTE_LABEL = 'skein.io/remote';
export const PEER_LABEL = 'skein.io/peer';
export const remoteSecretName = (peer: string) => `skein-remote-${peer}`;
export const peerSecretName = (peer: string) => `skein-peer-${peer}`;

export const RemoteSecret = z.object({
  cluster: ClusterName,
  /** The peer's cluster ID, pinned: its identities must carry it in bits 16-23, its config must name it. */
  id: z
    .string()
    .regex(/^[1-9]\d*$/, 'id must be the peer\'s cluster ID (1-255): run skein connect again')
    .refine((s) => ClusterId.safeParse(Number(s)).success, 'id must be the peer\'s cluster ID (1-255): run skein connect again'),
  endpoint: z.string().regex(/^https:\/\/[^/\s]+$/, 'endpoint must be https://HOST:PORT'),
  /** The peer's mesh CA: verifies its mesh etcd's serving certificate. */
  'ca.crt': z.string().includes('BEGIN CERTIFICATE'),
  /** The peer's workload CA: its trust domain's bundle, what our workloads verify its SVIDs with. */
  'bundle.crt': z.string().includes('BEGIN CERTIFICATE', { message: 'the peer\'s trust bundle is missing: run skein connect again' }),
  'tls.crt': z.string().includes('BEGIN CERTIFICATE'),
  'tls.key': z.string().includes('PRIVATE KEY'),
  'trust-domain': z.string(),
  /** The peer's pod CIDRs, pinned (comma separated, canonical): every pod address it claims must be inside. */
  'pod-cidrs': z
    .string({ error: "the link has no pinned pod CIDRs (it predates pinning): run skein connect again to pin the peer's pod CIDRs" })
    .superRefine((text, ctx) => {
      const err = pinError(text);
      if (err) ctx.addIssue({ code: 'custom', message: `${err}; run skein connect again` });
    }),
});
export type RemoteSecret = z.infer<typeof RemoteSecret>;

export const PeerSecret = z.object({ cluster: ClusterName });
