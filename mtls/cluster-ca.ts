// Each cluster's CA, kept in a Kubernetes Secret (skein-system/skein-ca) and created on first use. Creation
// is race-safe: whoever creates the Secret first wins, everyone else reads the winner's CA. Each cluster is
// its own SPIFFE trust domain; clusters trust each other through exchanged bundles, never a shared CA.
import { createCA, type PemPair } from './x509.js';

export const CA_SECRET = 'skein-ca';
const CA_TTL_MS = 10 * 365 * 24 * 3600_000;

/** Where CA material lives: a Secret-like store of string data (the caller adapts Kubernetes to it). */
export interface SecretStore {
  get(name: string): Promise<Record<string, string> | undefined>;
  /** Creates the secret; false if it already existed (nothing written). */
  create(name: string, data: Record<string, string>): Promise<boolean>;
}

export interface ClusterCA {
  ca: PemPair;
  trustDomain: string;
}

export const trustDomainOf = (cluster: string) => `${cluster}.skein`;
export const spiffeId = (cluster: string, path: string) => `spiffe://${trustDomainOf(cluster)}/${path.replace(/^\//, '')}`;

function fromData(data: Record<string, string>, cluster: string): ClusterCA {
  if (!data['ca.crt'] || !data['ca.key']) throw new Error(`secret ${CA_SECRET} lacks ca.crt or ca.key: delete it to have a new CA made (every peer must then be connected again)`);
  return { ca: { certPem: data['ca.crt'], keyPem: data['ca.key'] }, trustDomain: data['trust-domain'] ?? trustDomainOf(cluster) };
}

export async function ensureClusterCA(store: SecretStore, cluster: string): Promise<ClusterCA> {
  const existing = await store.get(CA_SECRET);
  if (existing) return fromData(existing, cluster);
  const trustDomain = trustDomainOf(cluster);
  const ca = await createCA({ commonName: `skein ${cluster} CA`, ttlMs: CA_TTL_MS, uri: `spiffe://${trustDomain}` });
  const data = { 'ca.crt': ca.certPem, 'ca.key': ca.keyPem, 'trust-domain': trustDomain };
  if (await store.create(CA_SECRET, data)) return { ca, trustDomain };
  return fromData((await store.get(CA_SECRET))!, cluster);
}
