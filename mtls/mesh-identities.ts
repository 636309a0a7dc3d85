// The transport identities around a cluster's mesh etcd, all signed by the cluster's mesh CA (never the
// workload CA). etcd maps a client certificate's CN to its user:
//   root           the cluster's own skein-apiserver (anything);
//   remote-<peer>  a connected peer: reads this cluster's export prefix (and its own renewals) only;
//   node-<node>    the agent of one node: reads what its datapath and Workload API need, writes its own view.
// Each also carries a URI SAN in Skein's own `urn:skein:` space, never a SPIFFE ID: a SPIFFE verifier
// (a workload's go-spiffe, a peer) neither chains it to a trust bundle nor reads it as a workload.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { ClusterCA } from './cluster-ca.js';
import { issueCertificate, issueForRequest, newKeyAndRequest, type CertSpec, type PemPair } from './x509.js';

/** What issuing a transport identity takes: the cluster's name and its mesh CA (never the workload CA). */
export type MeshCA = Pick<ClusterCA, 'cluster' | 'mesh'>;

const HOUR = 3600_000;
export const ETCD_ROOT_USER = 'root';
export const remoteUser = (peer: string) => `remote-${peer}`;
export const NODE_USER_PREFIX = 'node-';
export const nodeUser = (node: string) => `${NODE_USER_PREFIX}${node}`;

/** Skein's non-SPIFFE name for a mesh transport identity. */
const meshUri = (cluster: string, role: string) => `urn:skein:mesh:${cluster}:${role}`;
export const nodeUri = (cluster: string, node: string) => meshUri(cluster, `node:${node}`);

/** The name every client verifies a cluster's mesh etcd by (its addresses are IPs, which TLS cannot name). */
export const meshEtcdServerName = (cluster: string) => `mesh-etcd.${cluster}`;

/** What the mesh etcd's serving certificate names (it is also etcd's client certificate towards its peers). */
export function meshEtcdServerSpec(ca: MeshCA, ips: string[], ttlMs: number): CertSpec {
  const c = ca.cluster;
  return { commonName: meshEtcdServerName(c), dnsNames: ['localhost', meshEtcdServerName(c)], ipAddresses: ips, uris: [meshUri(c, 'etcd')], usage: 'both', ttlMs };
}

/** The installer's first one; skein-apiserver with --mesh-etcd-serving-dir renews it (shorter-lived) from then on. */
export function issueMeshEtcdServer(ca: MeshCA, ips: string[]): Promise<PemPair> {
  return issueCertificate(ca.mesh, meshEtcdServerSpec(ca, ips, 365 * 24 * HOUR));
}

/** The cluster's own apiserver as etcd root. */
export function issueMeshRootClient(ca: MeshCA, ttlMs = 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.mesh, { commonName: ETCD_ROOT_USER, uris: [meshUri(ca.cluster, 'apiserver')], usage: 'client', ttlMs });
}

/** A peer's read-only identity, signed by this cluster's mesh CA and handed to the peer by `skein connect`. */
export function issueRemoteClient(ca: MeshCA, peer: string, ttlMs = 365 * 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.mesh, { commonName: remoteUser(peer), uris: [meshUri(ca.cluster, `remote:${peer}`)], usage: 'client', ttlMs });
}

/**
 * A node agent's identity: etcd user node-<node> (by CN) on the mesh etcd, and its node (by URI SAN) to the
 * node CA, which signs SVIDs only for that node's pods.
 */
export function issueNodeIdentity(ca: MeshCA, node: string, ttlMs = 365 * 24 * HOUR): Promise<PemPair> {
  return issueCertificate(ca.mesh, nodeIdentitySpec(ca, node, ttlMs));
}

const nodeIdentitySpec = (ca: MeshCA, node: string, ttlMs: number) => ({ commonName: nodeUser(node), uris: [nodeUri(ca.cluster, node)], usage: 'client' as const, ttlMs });

/** What a node agent makes on its node for its identity: a key that never leaves it and a request for it. */
export function nodeIdentityRequest(node: string): Promise<{ keyPem: string; csrPem: string }> {
  return newKeyAndRequest(nodeUser(node));
}

/**
 * The cluster's side: the node identity for the key of `node`'s request (checked: it proves the key and
 * names exactly node-<node>). The caller decides that the requester is that node's agent.
 */
export function issueNodeIdentityFor(ca: MeshCA, node: string, csrPem: string, ttlMs = 365 * 24 * HOUR): Promise<string> {
  return issueForRequest(ca.mesh, csrPem, nodeUser(node), nodeIdentitySpec(ca, node, ttlMs));
}

/**
 * The node's side, before it uses a node identity it was sent (by the CSR signer or a renewal): signed by the
 * CA sent with it, for exactly node-<node>, and for the key the node made. Throws saying which does not hold.
 */
export function checkIssuedNodeIdentity(issued: { certPem: string; caPem: string }, node: string, keyPem: string): X509Certificate {
  const leaf = new X509Certificate(issued.certPem);
  const ca = new X509Certificate(issued.caPem);
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) throw new Error('the issued certificate is not signed by the CA sent with it');
  if (leaf.subject !== `CN=${nodeUser(node)}`) throw new Error(`issued for "${leaf.subject}", not CN=${nodeUser(node)}`);
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the issued certificate is for another key');
  return leaf;
}
