// `skein connect` / `skein disconnect`: link two clusters in both directions with one command, through the
// two Kubernetes APIs only. Each side gets the other's mesh endpoint, CA and a read-only client identity
// the other's CA signed; each side authorizes the other's etcd user. Idempotent; refuses clusters that
// cannot be meshed (same name, same ID, overlapping pod CIDRs).
import type { Command } from 'commander';
import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../../apiserver/kube/rest.js';
import { KubeSecrets } from '../../apiserver/kube/secrets.js';
import type { ApiserverStatus } from '../../apiserver/status.js';
import { ensureClusterCA } from '../../mtls/cluster-ca.js';
import { issueRemoteClient } from '../../mtls/mesh-identities.js';
import { remainingMs } from '../../sync/credentials.js';
import { PEER_LABEL, peerSecretName, REMOTE_LABEL, remoteSecretName } from '../../sync/secrets.js';
import { fetchStatus, kubeconfigFor } from './status.js';

type Progress = (msg: string) => void;
/** The first identity; the issuing cluster renews it at half-life (its --remote-identity-ttl). */
const FIRST_IDENTITY_TTL_MS = 24 * 3600_000;

function cidrRange(cidr: string): [number, number] {
  const [ip, bits] = cidr.split('/') as [string, string];
  const base = ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  const start = base - (base % size);
  return [start, start + size - 1];
}

export function overlappingCidrs(a: string[], b: string[]): [string, string] | undefined {
  for (const x of a) {
    for (const y of b) {
      const [xs, xe] = cidrRange(x);
      const [ys, ye] = cidrRange(y);
      if (xs <= ye && ys <= xe) return [x, y];
    }
  }
  return undefined;
}

export function checkMeshable(a: ApiserverStatus, b: ApiserverStatus): void {
  if (a.cluster === b.cluster) throw new Error(`both contexts are cluster "${a.cluster}": every cluster in a mesh needs its own name (set --cluster-name on one skein-apiserver)`);
  if (a.clusterId === b.clusterId) throw new Error(`clusters ${a.cluster} and ${b.cluster} both have cluster ID ${a.clusterId}: give one another ID (--cluster-id, 1-255)`);
  const overlap = overlappingCidrs(a.podCidrs, b.podCidrs);
  if (overlap) throw new Error(`pod CIDRs overlap: ${a.cluster} has ${overlap[0]}, ${b.cluster} has ${overlap[1]}; pods of meshed clusters must have distinct addresses`);
}

/** `from` gets credentials to read `to`; `to` authorizes `from`. Returns whether anything changed. */
async function link(from: { kc: KubeConfig; status: ApiserverStatus }, to: { kc: KubeConfig; status: ApiserverStatus }, progress: Progress): Promise<boolean> {
  const fromSecrets = new KubeSecrets(new KubeRest(from.kc));
  const toSecrets = new KubeSecrets(new KubeRest(to.kc));
  const a = from.status.cluster;
  const b = to.status.cluster;
  let changed = false;
  const caB = await ensureClusterCA(toSecrets, b);
  const have = await fromSecrets.get(remoteSecretName(b));
  const current =
    have &&
    have.endpoint === to.status.meshEndpoint &&
    have['ca.crt'] === caB.ca.certPem &&
    have['tls.crt'] &&
    new X509Certificate(have['tls.crt']).checkIssued(new X509Certificate(caB.ca.certPem)) &&
    // Renewal is the issuing cluster's job; connect only replaces an identity about to lapse.
    remainingMs(have['tls.crt']) > 60_000;
  if (!current) {
    progress(`${a}: issuing a read-only identity for ${b}'s mesh (signed by ${b}'s CA) and storing it as ${remoteSecretName(b)}`);
    const cert = await issueRemoteClient(caB, b, a, FIRST_IDENTITY_TTL_MS);
    await fromSecrets.put(
      remoteSecretName(b),
      { cluster: b, id: String(to.status.clusterId), endpoint: to.status.meshEndpoint, 'ca.crt': caB.ca.certPem, 'tls.crt': cert.certPem, 'tls.key': cert.keyPem, 'trust-domain': caB.trustDomain },
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

export async function waitForRemotes(kc: KubeConfig, want: (s: ApiserverStatus) => boolean, what: string, timeoutMs: number, progress: Progress): Promise<ApiserverStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const s = await fetchStatus(kc);
    if (want(s)) return s;
    const line = s.remotes.map((r) => `${r.cluster}: ${r.synced ? 'synced' : r.connected ? 'syncing' : 'connecting'}${r.lastError ? ` (${r.lastError})` : ''}`).join(', ') || 'no remotes yet';
    if (line !== last) progress(`${s.cluster}: ${line}`);
    last = line;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what} (${line})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function connect(kcA: KubeConfig, kcB: KubeConfig, progress: Progress, timeoutMs = 120_000): Promise<{ changed: boolean }> {
  progress('reading both clusters through their Kubernetes APIs');
  const [a, b] = await Promise.all([fetchStatus(kcA), fetchStatus(kcB)]);
  checkMeshable(a, b);
  const aToB = await link({ kc: kcA, status: a }, { kc: kcB, status: b }, progress);
  const bToA = await link({ kc: kcB, status: b }, { kc: kcA, status: a }, progress);
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
      const r = await connect(kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.context }), kubeconfigFor({ kubeconfig: o.kubeconfig, context: o.destinationContext }), progress, Number(o.timeout) * 1000);
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
