// `skein status`: what a cluster's skein-apiserver exports, read through that cluster's Kubernetes API.
import { positiveInt } from './flags.js';
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { ApiserverStatus } from '../../mesh/status.js';
import { AgentView } from '../../mesh/schema/values.js';
import { firstIssue } from '../../mesh/schema/issue.js';
import { KubeApiError, KubeRest } from '../../mesh/kube/rest.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';

/**
 * The kubeconfig a command works with. Missing files and contexts are errors that say so: client-node's
 * default otherwise falls back to http://localhost:8080 and the user sees only ECONNREFUSED.
 */
export function kubeconfigFor(opts: { kubeconfig?: string; context?: string }): KubeConfig {
  const kc = new KubeConfig();
  const file = opts.kubeconfig ?? process.env.KUBECONFIG?.split(':').find((f) => f && existsSync(f)) ?? join(homedir(), '.kube', 'config');
  const fromCluster = !opts.kubeconfig && !process.env.KUBECONFIG && !existsSync(file) && process.env.KUBERNETES_SERVICE_HOST;
  if (fromCluster) kc.loadFromCluster();
  else if (!existsSync(file)) throw new Error(`no kubeconfig at ${file}: pass --kubeconfig FILE or set KUBECONFIG (skein local up prints it)`);
  else if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault();
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) throw new Error(`--context ${opts.context}: no such context in ${file} (have ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
    kc.setCurrentContext(opts.context);
  } else if (!kc.getCurrentCluster()) {
    throw new Error(`${file} has no current context: pass --context (have ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
  }
  return kc;
}

export async function fetchStatus(kc: KubeConfig): Promise<ApiserverStatus> {
  let raw: unknown;
  try {
    raw = await new KubeRest(kc).get<unknown>(skeinProxyPath('/v1/status'));
  } catch (err) {
    if (err instanceof KubeApiError && (err.status === 404 || err.status === 503)) {
      throw new Error(`skein-apiserver is not reachable in context ${kc.getCurrentContext()} (${err.status}): is Skein installed there? (${err.message})`, { cause: err });
    }
    throw err;
  }
  const parsed = ApiserverStatus.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`skein-apiserver in context ${kc.getCurrentContext()} answered a status this skein cannot read (${firstIssue(parsed.error, '', 'status')}): use a skein CLI of the same version as the installed Skein`);
  }
  return parsed.data;
}

export type Progress = (msg: string) => void;

/** Polls the status until `want` holds, reporting each remote's sync state as it changes. */
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

function renderStatus(s: ApiserverStatus): string {
  const lines = [
    `cluster ${s.cluster} (id ${s.clusterId})  export ${s.synced ? 'synced' : 'NOT synced yet'}`,
    `  nodes ${s.nodes}  identities ${s.identities}  pod IPs ${s.ips}  etcd writes ${s.etcd.writes}  backlog ${s.etcd.backlog}  watch restarts ${s.watchRestarts}`,
  ];
  if (s.workloadCa) {
    const w = s.workloadCa;
    lines.push(`  workload CA ${w.signer} signs; bundle ${w.bundle.join(', ')}${w.phase === 'idle' ? '' : `  ROTATING: ${w.phase} since ${w.since} (skein ca rotate --context ... --resume finishes it)`}`);
  }
  if (s.etcd.lastError) lines.push(`  last mesh etcd error: ${s.etcd.lastError}`);
  if (s.etcd.refusedWrites?.length) {
    lines.push(`  REFUSED writes (too large for an etcd request; etcd keeps the previous value): ${s.etcd.refusedWrites.map((w) => `${w.key} (${w.bytes} bytes)`).join(', ')}`);
  }
  lines.push(`  global services exported: ${s.services.length}`);
  const width = Math.max(8, ...s.services.map((x) => x.name.length));
  if (s.services.length) lines.push(`    ${'SERVICE'.padEnd(width)}  READY/BACKENDS  AFFINITY  SHARED`);
  for (const x of s.services) lines.push(`    ${x.name.padEnd(width)}  ${`${x.readyBackends}/${x.backends}`.padEnd(14)}  ${x.affinity.padEnd(8)}  ${x.shared}${x.warning ? `  WARNING: ${x.warning}` : ''}`);
  lines.push(`  remote clusters: ${s.remotes.length}`);
  for (const r of s.remotes) {
    const state = !r.connected ? 'DISCONNECTED' : !r.synced ? 'syncing' : r.stale ? 'STALE' : 'synced';
    lines.push(`    ${r.cluster} (id ${r.id}) ${state}  heartbeat ${r.lastHeartbeat ?? 'never'}  revision ${r.revision} (lag ${r.revisionLag})  services ${r.services}  identities ${r.identities}  nodes ${r.nodes}  rejected ${r.rejected}${quotaSuffix(r)}${r.lastError ? `  last error: ${r.lastError}` : ''}`);
    lines.push(...remoteTrustLines(r));
  }
  lines.push(`  node agents: ${s.agents?.length ?? 0}`);
  for (const a of s.agents ?? []) lines.push(`    ${a.node}  frontends ${a.frontends}  backends ${a.backends}  reconciles ${a.reconciles} (last ${a.lastReconcileMs} ms)  at ${a.at}${a.failures ? `  FAILING ${a.failures} (skein status --node ${a.node})` : ''}${a.ejectedCount ? `  EJECTED ${a.ejectedCount} (skein status --node ${a.node})` : ''}`);
  return lines.join('\n');
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)}`;

/** A remote's use of its import quota, flagged when over it (older apiservers report none). */
function quotaSuffix(r: ApiserverStatus['remotes'][number]): string {
  const q = r.quota;
  if (!q) return '';
  const use = `  quota ${q.keys}/${q.maxKeys} keys ${mib(q.bytes)}/${mib(q.maxBytes)} MiB`;
  return q.overQuota ? `${use} OVER QUOTA (${q.refusedKeys} keys refused)` : use;
}

/** A remote's pin and what was refused from it, by reason (older apiservers report neither). */
function remoteTrustLines(r: ApiserverStatus['remotes'][number]): string[] {
  const lines: string[] = [];
  if (r.pinnedPodCidrs) lines.push(`      pinned pod CIDRs ${r.pinnedPodCidrs.join(', ') || 'none'}`);
  if (r.advertisedBeyondPin?.length) lines.push(`      advertises ${r.advertisedBeyondPin.join(', ')} beyond its pin: addresses there are refused until skein connect is run again to re-pin`);
  const reasons = Object.entries(r.rejectedByReason ?? {}).filter(([, n]) => n);
  if (reasons.length) lines.push(`      rejected by reason: ${reasons.map(([reason, n]) => `${reason} ${n}`).join(', ')}`);
  return lines;
}

/**
 * One node's whole view (every frontend it programs: /v1/status lists AGENT_VIEW_MAX per node), or the
 * status's entry for it when that node's view is gone or the apiserver predates /v1/status/agents.
 */
export async function fetchAgentView(kc: KubeConfig, s: ApiserverStatus, node: string): Promise<AgentView> {
  const listed = (s.agents ?? []).find((x) => x.node === node);
  if (!listed) throw new Error(`--node ${node}: no agent view from that node in cluster ${s.cluster} (have ${(s.agents ?? []).map((x) => x.node).join(', ') || 'none'}); is skein-agent running there?`);
  try {
    const parsed = AgentView.safeParse(await new KubeRest(kc).get<unknown>(skeinProxyPath(`/v1/status/agents/${encodeURIComponent(node)}`)));
    if (!parsed.success) throw new Error(`skein-apiserver in context ${kc.getCurrentContext()} answered a node view this skein cannot read (${firstIssue(parsed.error, '', 'view')}): use a skein CLI of the same version as the installed Skein`);
    return parsed.data;
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 404) return listed;
    throw err;
  }
}

/** One node's programmed datapath: every frontend and the backends it balances over now. */
export function renderNodeView(cluster: string, a: AgentView): string {
  const width = Math.max(8, ...[...Object.keys(a.programmed), ...Object.keys(a.failing ?? {})].map((k) => k.length));
  const lines = [`node ${a.node} of ${cluster}: ${a.frontends} frontends, ${a.backends} backend slots (as of ${a.at})`, `  ${'FRONTEND'.padEnd(width)}  BACKENDS`];
  for (const [f, b] of Object.entries(a.programmed)) lines.push(`  ${f.padEnd(width)}  ${b.join(', ') || '-'}`);
  if (a.truncated) lines.push(`  ... ${a.frontends - Object.keys(a.programmed).length} more not shown`);
  const failing = Object.entries(a.failing ?? {});
  const failures = a.failures ?? failing.length;
  if (failing.length) {
    lines.push(`  FAILING ${failures}: not programmed as wanted (each keeps what it had and is retried on its own)`);
    for (const [f, x] of failing) lines.push(`  ${f.padEnd(width)}  ${x.service || '(removal)'}  ${x.reason} since ${x.since}, ${x.attempts} attempt${x.attempts === 1 ? '' : 's'}: ${x.error}`);
    if (failures > failing.length) lines.push(`  ... ${failures - failing.length} more failing not shown`);
  }
  const ejected = a.ejected ?? [];
  if (ejected.length) {
    lines.push(`  EJECTED ${a.ejectedCount ?? ejected.length}: backends this node saw fail, out of active sets until the time shown (then back on probation)`);
    for (const e of ejected) lines.push(`  ${e.backend.padEnd(width)}  ${e.service ?? '-'}  ${e.failures} failures in a row, ejection #${e.ejections}, since ${e.since} until ${e.until}`);
    if ((a.ejectedCount ?? 0) > ejected.length) lines.push(`  ... ${a.ejectedCount! - ejected.length} more ejected not shown`);
  }
  return lines.join('\n');
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description("show what a cluster's skein-apiserver exports (through the cluster's Kubernetes API)")
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--context <ctx>', 'kubeconfig context of the cluster')
    .option('--json', 'print the status as JSON')
    .option('--wait', 'wait until every remote cluster is synced')
    .option('--node <name>', "show that node's datapath: each frontend and its active backends")
    .option('--timeout <seconds>', 'with --wait: how long', '120')
    .action(async (o: { kubeconfig?: string; context?: string; json?: boolean; wait?: boolean; node?: string; timeout: string }) => {
      const timeoutMs = positiveInt('--timeout', o.timeout, 3_600) * 1000;
      const kc = kubeconfigFor(o);
      const status = o.wait
        ? await waitForRemotes(kc, (s) => s.synced && s.remotes.every((r) => r.synced), 'every remote to sync', timeoutMs, (m) => console.error(`  ${m}`))
        : await fetchStatus(kc);
      if (o.node) {
        const view = await fetchAgentView(kc, status, o.node);
        console.log(o.json ? JSON.stringify(view, null, 2) : renderNodeView(status.cluster, view));
      } else console.log(o.json ? JSON.stringify(status, null, 2) : renderStatus(status));
    });
}
