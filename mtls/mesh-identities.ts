// The transport identities around a cluster's mesh etcd. etcd maps a client certificate's CN to its user:
// `root` is the cluster's own skein-apiserver; `remote-<peer>` is a connected peer, which may only read
// this cluster's export prefix; `skein-agent` is any node agent of the cluster. Every certificate also names its holder as a SPIFFE ID.
import { spiffeId, type ClusterCA } from './cluster-ca.js';
import { issueCertificate, type PemPair } from './x509.js';

const HOUR = 3600_000;
export const ETCD_ROOT_USER = 'root';
export const remoteUser = (peer: string) => `remote-${peer}`;
/** Every node agent of the cluster: reads the mesh, writes only its own view. */
export const AGENT_USER = 'skein-agent';
export const nodeSpiffeId = (trustDomain: string, node: string) => `spiffe://${trustDomain}/skein/node/${node}`;

export function issueMeshEtcdServer(ca: ClusterCA, cluster: string, ips: string[]): Promise<PemPair> {
  return issueCertificate(ca.ca, { commonName: `mesh-etcd.${cluster}`, dnsNames: ['localhost', `mesh-etcd.${cluster}`], ipAddresses: ips, uris: [spiffeId(cluster, 'skein/mesh-etcd')], usage: 'both', ttlMs: 365 * 24 * HOUR });
}

/** The cluster's own apiserver as etcd root. */
export function issueMeshRootClient(ca: ClusterCA, cluster: string, ttlMs = 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.ca, { commonName: ETCD_ROOT_USER, uris: [spiffeId(cluster, 'skein/apiserver')], usage: 'client', ttlMs });
}

/** A peer's read-only identity, signed by this cluster's CA and handed to the peer by `skein connect`. */
export function issueRemoteClient(ca: ClusterCA, cluster: string, peer: string, ttlMs = 365 * 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.ca, { commonName: remoteUser(peer), uris: [spiffeId(cluster, `skein/remote/${peer}`)], usage: 'client', ttlMs });
}

/**
 * A node agent's identity: etcd user skein-agent (by CN) on the mesh etcd, and its node (by URI SAN) to the
 * node CA, which signs SVIDs only for that node's pods.
 */
export function issueNodeIdentity(ca: ClusterCA, node: string, ttlMs = 365 * 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.ca, { commonName: AGENT_USER, uris: [nodeSpiffeId(ca.trustDomain, node)], usage: 'client', ttlMs });
}
