// `skein connect` / `skein disconnect`: link two clusters in both directions with one command, through the
// two Kubernetes APIs only. Each side gets the other's mesh endpoint, CA and a read-only client identity
// the other's CA signed; each side authorizes the other's etcd user. Each link pins the peer's cluster ID
// and pod CIDRs as connect sees them (the cluster pod CIDR when its apiserver has --cluster-pod-cidr, else
// its nodes' at this moment): all the peer may ever claim (mesh/address-policy.ts); only running
// connect again re-pins, and it says so. Idempotent; refuses clusters that cannot be meshed (same name, same
// ID, overlapping pod CIDRs) and, before writing anything, a peer that collides with an existing link (the
// same name with another CA, another linked cluster's ID or pod CIDRs).
import { positiveInt } from './flags.js';
import type { Command } from 'commander';
import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../../mesh/kube/rest.js';
import { KubeSecrets } from '../../mesh/kube/secrets.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { ensureClusterCA, WORKLOAD_CA_SECRET, type ClusterCA } from '../../mtls/cluster-ca.js';
import { checkBundleCa } from '../../mtls/trust-bundle.js';
import { issueRemoteClient } from '../../mtls/mesh-identities.js';
import { remainingMs } from '../../mesh/credentials.js';
import { PEER_LABEL, peerSecretName, REMOTE_LABEL, remoteSecretName } from '../../mesh/link-secrets.js';
import { formatPin, parsePin, pinError, Subnet } from '../../mesh/address-policy.js';
import { fetchStatus, kubeconfigFor, waitForRemotes, type Progress } from './status.js';

/** The first identity; the issuing cluster renews it at half-life (its --remote-identity-ttl). */
const FIRST_IDENTITY_TTL_MS = 24 * 3600_000;

export function overlappingCidrs(a: string[], b: string[]): [string, string] | undefined {
  for (const x of a) {
    for (const y of b) {
      const [sx, sy] = [Subnet.parse(x), Subnet.parse(y)];
      if (sx && sy && sx.overlaps(sy)) return [x, y];
    }
  }
  return undefined;
}

/** What a link to this cluster pins: its pod CIDRs, canonical (throws naming the cluster if they cannot be pinned). */
function podCidrPin(s: Pick<ApiserverStatus, 'cluster' | 'podCidrs'>): string {
  const why = (err: string) => new Error(`cannot pin the pod CIDRs of ${s.cluster} (${s.podCidrs.join(', ') || 'none'}): ${err}`);
  let pin: string;
  try {
    pin = formatPin(s.podCidrs);
  } catch (err) {
    throw why((err as Error).message);
  }
  const err = pinError(pin);
  if (err) throw why(err);
  return pin;
}

export function checkMeshable(a: ApiserverStatus, b: ApiserverStatus): void {
  if (a.cluster === b.cluster) throw new Error(`both contexts are cluster "${a.cluster}": every cluster in a mesh needs its own name (set --cluster-name on one skein-apiserver)`);
  if (a.clusterId === b.clusterId) throw new Error(`clusters ${a.cluster} and ${b.cluster} both have cluster ID ${a.clusterId}: give one another ID (--cluster-id, 1-255)`);
  for (const s of [a, b]) podCidrPin(s);
  const overlap = overlappingCidrs(a.podCidrs, b.podCidrs);
  if (overlap) throw new Error(`pod CIDRs overlap: ${a.cluster} has ${overlap[0]}, ${b.cluster} has ${overlap[1]}; pods of meshed clusters must have distinct addresses`);
}

/**
 * Refuses a cluster whose workload CA is not exactly its own trust domain's (`<cluster>.skein`): a CA naming
 * the other side's trust domain, or a connected cluster's, would let it sign identities in that domain.
 */
function checkTrustDomain(ca: ClusterCA, other: ClusterCA, linked: Map<string, string>): void {
  const own = checkBundleCa(ca.workload.certPem, ca.trustDomain);
  if (!own.ok) throw new Error(`cluster ${ca.cluster}'s workload CA (Secret skein-system/${WORKLOAD_CA_SECRET}) is not valid for trust domain ${ca.trustDomain}: ${own.error}; refusing to connect it to ${other.cluster}`);
  if (ca.trustDomain === other.trustDomain) throw new Error(`clusters ${ca.cluster} and ${other.cluster} both claim trust domain ${ca.trustDomain}`);
  for (const [peer, td] of linked) {
    if (peer !== ca.cluster && td === ca.trustDomain) throw new Error(`cluster ${ca.cluster} claims trust domain ${td}, which belongs to ${peer}, already linked from ${other.cluster}`);
  }
}

/** The trust domain of every cluster this one is linked to (its skein-remote-* Secrets). */
function linkedTrustDomains(links: Link[]): Map<string, string> {
  return new Map(links.filter((l) => l.data.cluster && l.data['trust-domain']).map((l) => [l.data.cluster!, l.data['trust-domain']!]));
}

/** One side of a connect: what its skein-apiserver reports, and its skein-system Secrets. */
export interface Side {
  status: ApiserverStatus;
  secrets: Pick<KubeSecrets, 'get' | 'create' | 'put' | 'list'>;
}

/** A link Secret (skein-remote-<peer>) as listed. */
export type Link = { name: string; data: Record<string, string> };

/** A short SHA-256 fingerprint of a CA certificate, for refusals an operator compares by eye. */
function caFingerprint(pem: string | undefined): string {
  try {
    return `sha256 ${new X509Certificate(pem ?? '').fingerprint256.split(':').slice(0, 8).join(':')}…`;
  } catch {
    return 'none readable';
  }
}

/**
 * Refuses a peer that collides with what `from` is already linked to: its name linked with another CA (a
 * rebuilt cluster, or an impostor taking its name), or another linked cluster with its cluster ID or
 * overlapping pinned pod CIDRs (the two could claim each other's identities and addresses).
 */
export function checkExistingLinks(from: string, links: Link[], to: { cluster: string; clusterId: number; podCidrs: string[]; meshCaPem: string }): void {
  for (const l of links) {
    const peer = l.data.cluster ?? l.name;
    if (peer === to.cluster || l.name === remoteSecretName(to.cluster)) {
      if (l.data['ca.crt'] === to.meshCaPem) continue;
      throw new Error(
        `cluster ${to.cluster} is already linked from ${from} with another CA (fingerprint ${caFingerprint(l.data['ca.crt'])}; ${to.cluster}'s CA now is ${caFingerprint(to.meshCaPem)}); run skein disconnect first if ${to.cluster} was rebuilt`,
      );
    }
    if (l.data.id === String(to.clusterId)) {
      throw new Error(`clusters ${to.cluster} and ${peer} both have cluster ID ${to.clusterId}, and ${peer} is already linked from ${from}: give ${to.cluster} another ID (--cluster-id, 1-255), or run skein disconnect for ${from} and ${peer} first`);
    }
    const overlap = overlappingCidrs(to.podCidrs, parsePin(l.data['pod-cidrs'] ?? ''));
    if (overlap) throw new Error(`pod CIDRs overlap: ${to.cluster} has ${overlap[0]}, ${peer} (already linked from ${from}) is pinned to ${overlap[1]}; pods of meshed clusters must have distinct addresses`);
  }
}

/** `from` gets credentials to read `to`; `to` authorizes `from`. Returns whether anything changed. */
async function link(from: Side, to: Side, progress: Progress): Promise<boolean> {
  const fromSecrets = from.secrets;
  const toSecrets = to.secrets;
  const a = from.status.cluster;
  const b = to.status.cluster;
  let changed = false;
  const caB = await ensureClusterCA(toSecrets, b);
  const have = await fromSecrets.get(remoteSecretName(b));
  const pin = { id: String(to.status.clusterId), 'pod-cidrs': podCidrPin(to.status) };
  const pinned = have?.id === pin.id && have['pod-cidrs'] === pin['pod-cidrs'];
  const current =
    have &&
    have.endpoint === to.status.meshEndpoint &&
    have['ca.crt'] === caB.mesh.certPem &&
    have['bundle.crt'] === caB.workloadBundle &&
    have['tls.crt'] &&
    new X509Certificate(have['tls.crt']).checkIssued(new X509Certificate(caB.mesh.certPem)) &&
    // Renewal is the issuing cluster's job; connect only replaces an identity about to lapse.
    remainingMs(have['tls.crt']) > 60_000;
  // Never silently: a peer whose advertised pod CIDRs (or ID) changed is re-pinned only by this run.
  if (have && !pinned) {
    progress(`${a}: re-pinning ${b}: pod CIDRs ${have['pod-cidrs'] ?? '(none pinned)'} -> ${pin['pod-cidrs']}, cluster ID ${have.id} -> ${pin.id} (what ${b} advertises now)`);
  } else if (!have) progress(`${a}: pinning ${b} to cluster ID ${pin.id} and pod CIDRs ${pin['pod-cidrs']}`);
  if (!current || !pinned) {
    let cert = current ? { certPem: have['tls.crt']!, keyPem: have['tls.key']! } : undefined;
    if (!cert) {
      progress(`${a}: issuing a read-only identity for ${b}'s mesh (signed by ${b}'s CA) and storing it as ${remoteSecretName(b)}`);
      cert = await issueRemoteClient(caB, a, FIRST_IDENTITY_TTL_MS);
    }
    await fromSecrets.put(
      remoteSecretName(b),
      { cluster: b, ...pin, endpoint: to.status.meshEndpoint, 'ca.crt': caB.mesh.certPem, 'bundle.crt': caB.workloadBundle, 'tls.crt': cert.certPem, 'tls.key': cert.keyPem, 'trust-domain': caB.trustDomain },
      { [REMOTE_LABEL]: b },
    );
    changed = true;
  }
  if (!(await toSecrets.get(peerSecretName(a)))) {
    progress(`${b}: authorizing ${a} to read ${b}'s export`);
    await toSecrets.create(peerSecretName(a), { cluster: a }, { [PEER_LABEL]: a });
    changed = true;
  }
  return changed;
}

/** Checks everything that could refuse the pair first, then links both directions. */
export async function linkBoth(sa: Side, sb: Side, progress: Progress): Promise<{ aToB: boolean; bToA: boolean }> {
  const [a, b] = [sa.status, sb.status];
  checkMeshable(a, b);
  const [caA, caB] = await Promise.all([ensureClusterCA(sa.secrets, a.cluster), ensureClusterCA(sb.secrets, b.cluster)]);
  const [linksA, linksB] = await Promise.all([sa.secrets.list(REMOTE_LABEL), sb.secrets.list(REMOTE_LABEL)]);
  checkTrustDomain(caB, caA, linkedTrustDomains(linksA));
  checkTrustDomain(caA, caB, linkedTrustDomains(linksB));
  // Both sides' existing links, before either side is written to.
  checkExistingLinks(a.cluster, linksA, { cluster: b.cluster, clusterId: b.clusterId, podCidrs: b.podCidrs, meshCaPem: caB.mesh.certPem });
  checkExistingLinks(b.cluster, linksB, { cluster: a.cluster, clusterId: a.clusterId, podCidrs: a.podCidrs, meshCaPem: caA.mesh.certPem });
  const aToB = await link(sa, sb, progress);
  const bToA = await link(sb, sa, progress);
  return { aToB, bToA };
}

export async function connect(kcA: KubeConfig, kcB: KubeConfig, progress: Progress, timeoutMs = 120_000): Promise<{ changed: boolean }> {
  progress('reading both clusters through their Kubernetes APIs');
  const [a, b] = await Promise.all([fetchStatus(kcA), fetchStatus(kcB)]);
  const { aToB, bToA } = await linkBoth({ status: a, secrets: new KubeSecrets(new KubeRest(kcA)) }, { status: b, secrets: new KubeSecrets(new KubeRest(kcB)) }, progress);
  progress(`waiting for ${a.cluster} and ${b.cluster} to sync each other`);
  const synced = (self: string, peer: string) => (s: ApiserverStatus) => s.cluster === self && s.remotes.some((r) => r.cluster === peer && r.synced);
  await Promise.all([
    waitForRemotes(kcA, synced(a.cluster, b.cluster), `${a.cluster} to sync ${b.cluster}`, timeoutMs, progress),
    waitForRemotes(kcB, synced(b.cluster, a.cluster), `${b.cluster} to sync ${a.cluster}`, timeoutMs, progress),
  ]);
  return { changed: aToB || bToA };
}

export async function disconnect(kcA: KubeConfig, kcB: KubeConfig, progress: Progress, timeoutMs = 60_000): Promise<void> {
  const [a, b] = await Promise.all([fetchStatus(kcA), fetchStatus(kcB)]);
  for (const [kc, self, peer] of [[kcA, a.cluster, b.cluster], [kcB, b.cluster, a.cluster]] as const) {
    const secrets = new KubeSecrets(new KubeRest(kc));
    progress(`${self}: removing the link to ${peer}`);
    await secrets.delete(remoteSecretName(peer));
    await secrets.delete(peerSecretName(peer));
  }
  const gone = (peer: string) => (s: ApiserverStatus) => !s.remotes.some((r) => r.cluster === peer);
  await Promise.all([waitForRemotes(kcA, gone(b.cluster), `${a.cluster} to drop ${b.cluster}`, timeoutMs, progress), waitForRemotes(kcB, gone(a.cluster), `${b.cluster} to drop ${a.cluster}`, timeoutMs, progress)]);
}

export function registerConnect(program: Command): void {
  const progress = (m: string) => console.error(`  ${m}`);
  program
    .command('connect')
    .description('mesh two clusters in both directions (idempotent)')
    .requiredOption('--context <ctx>', 'kubeconfig context of one cluster')
    .requiredOption('--destination-context <ctx>', 'kubeconfig context of the other cluster')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--timeout <seconds>', 'how long to wait for both to sync', '120')
    .action(async (o: { context: string; destinationContext: string; kubeconfig?: string; timeout: string }) => {
      const t0 = Date.now();
      const timeoutMs = positiveInt('--timeout', o.timeout, 3_600) * 1000;
      const r = await connect(kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.context }), kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.destinationContext }), progress, timeoutMs);
      console.log(`${o.context} <-> ${o.destinationContext}: ${r.changed ? 'connected' : 'already connected'} and synced in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });
  program
    .command('disconnect')
    .description('remove the mesh link between two clusters in both directions')
    .requiredOption('--context <ctx>', 'kubeconfig context of one cluster')
    .requiredOption('--destination-context <ctx>', 'kubeconfig context of the other cluster')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .action(async (o: { context: string; destinationContext: string; kubeconfig?: string }) => {
      await disconnect(kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.context }), kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.destinationContext }), progress);
      console.log(`${o.context} and ${o.destinationContext} are disconnected`);
    });
}
