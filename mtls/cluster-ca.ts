// Each cluster's two CAs, each kept in a Kubernetes Secret of skein-system and created on first use
// (race-safe: whoever creates a Secret first wins, everyone else reads the winner's CA).
//
//   skein-ca           the mesh CA: transport identities around the mesh etcd and the node CA (etcd server,
//                      the apiserver's root client, peers' read identities, node certificates, the node CA's
//                      serving certificate). No SPIFFE ID: nothing it signs is a workload identity.
//   skein-workload-ca  the SPIFFE trust domain's CA (URI SAN spiffe://<td>): X.509- and JWT-SVIDs only. The
//                      trust bundles served to workloads and handed to peers carry this CA alone, and while
//                      `skein ca rotate` runs also the next or the retiring one (ca-rotation.ts).
//
// Kept apart so that no transport credential (a peer's read identity, a node certificate) verifies as a
// workload of the trust domain, and no SVID opens the mesh etcd. Clusters trust each other through
// exchanged bundles, never a shared CA.
import { createCA, type PemPair } from './x509.js';
import { workloadCaState } from './ca-rotation.js';

export const CA_SECRET = 'skein-ca';
export const WORKLOAD_CA_SECRET = 'skein-workload-ca';
const CA_TTL_MS = 10 * 365 * 24 * 3600_000;

/** Where CA material lives: a Secret-like store of string data (the caller adapts Kubernetes to it). */
export interface SecretStore {
  get(name: string): Promise<Record<string, string> | undefined>;
  /** Creates the secret; false if it already existed (nothing written). */
  create(name: string, data: Record<string, string>): Promise<boolean>;
}

export interface ClusterCA {
  cluster: string;
  /** The SPIFFE trust domain of the cluster's workloads. */
  trustDomain: string;
  /** Signs the mesh's transport identities; trusted by the mesh etcd and the node CA only. */
  mesh: PemPair;
  /** Signs workload SVIDs. */
  workload: PemPair;
  /** What trust bundles carry: the workload CA, and while it rotates the other CA too (ca-rotation.ts). */
  workloadBundle: string;
}

export const trustDomainOf = (cluster: string) => `${cluster}.skein`;

function fromData(name: string, data: Record<string, string>): PemPair {
  if (!data['ca.crt'] || !data['ca.key']) throw new Error(`secret ${name} lacks ca.crt or ca.key: delete it to have a new CA made (every peer must then be connected again)`);
  return { certPem: data['ca.crt'], keyPem: data['ca.key'] };
}

/** The CA Secret's data, made first if it does not exist. */
async function ensureCA(store: SecretStore, name: string, make: () => Promise<PemPair>, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  const existing = await store.get(name);
  if (existing) return existing;
  const ca = await make();
  const data = { 'ca.crt': ca.certPem, 'ca.key': ca.keyPem, ...extra };
  if (await store.create(name, data)) return data;
  return (await store.get(name))!;
}

export async function ensureClusterCA(store: SecretStore, cluster: string): Promise<ClusterCA> {
  const trustDomain = trustDomainOf(cluster);
  const mesh = fromData(CA_SECRET, await ensureCA(store, CA_SECRET, () => createCA({ commonName: `skein ${cluster} mesh CA`, ttlMs: CA_TTL_MS })));
  const workloadData = await ensureCA(store, WORKLOAD_CA_SECRET, () => newWorkloadCA(cluster), { 'trust-domain': trustDomain });
  const workload = fromData(WORKLOAD_CA_SECRET, workloadData);
  return { cluster, trustDomain, mesh, workload, workloadBundle: workloadCaState(workloadData).bundlePem };
}

/** A new CA for the cluster's SPIFFE trust domain (at install, and as the next CA of a rotation). */
export const newWorkloadCA = (cluster: string): Promise<PemPair> => createCA({ commonName: `skein ${cluster} workload CA`, ttlMs: CA_TTL_MS, uri: `spiffe://${trustDomainOf(cluster)}` });
