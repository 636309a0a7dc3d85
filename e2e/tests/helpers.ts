// Shared by the e2e tests: a test bed per test file in its own temp state dir, and ways to look at it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import type { Pod } from '../../mesh/kube/objects.js';
import { KubeRest } from '../../mesh/kube/rest.js';
import { waitFor } from '../../testbed/daemon.js';
import type { Etcd3 } from 'etcd3';
import { connectMeshEtcd } from '../../mesh/etcd.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { readState, statePaths } from '../../testbed/state.js';
import { meshPki } from '../../testbed/skein-apiserver.js';
import { clientCommand, exec } from '../../testbed/testbed.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { parseOutcome, type Outcome } from '../../deploy/images/outcome.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ExportStatus } from '../../mesh/status.js';

const stateDirs: string[] = [];

export function tempStateDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `skein-e2e-${name}-`));
  stateDirs.push(dir);
  return dir;
}

const reportedExits = new Set<string>();

/**
 * Every container exit the node runners logged since the last report, each with the end of its log: after
 * a failed test (CI keeps no state dirs, and a crashed skein-apiserver otherwise shows only as a 503).
 */
export function containerExits(): string {
  const out: string[] = [];
  for (const dir of stateDirs) {
    const logs = join(dir, 'logs');
    if (!existsSync(logs)) continue;
    for (const cluster of readdirSync(logs)) {
      const clusterLogs = join(logs, cluster);
      for (const file of readdirSync(clusterLogs).filter((f) => f.endsWith('.log'))) {
        for (const line of readFileSync(join(clusterLogs, file), 'utf8').split('\n')) {
          const m = / ([^/ ]+)\/([^/ ]+)\/([^/ :]+): exited (\d+)/.exec(line);
          if (!m || reportedExits.has(line)) continue;
          reportedExits.add(line);
          const [, ns, pod, container] = m;
          const podLogs = join(clusterLogs, 'pods');
          const log = existsSync(podLogs) ? readdirSync(podLogs).find((f) => f.startsWith(`${ns}_${pod}_`) && f.endsWith(`_${container}.log`)) : undefined;
          const tail = log ? readFileSync(join(podLogs, log), 'utf8').trimEnd().split('\n').slice(-20).map((l) => `    ${l.slice(0, 400)}`) : [];
          out.push(`${cluster}: ${line}`, ...tail);
        }
      }
    }
  }
  return out.join('\n');
}

/** What the containers of `cluster` whose log file names start with `prefix` (namespace_pod_) printed, in one string. */
export function containerLog(stateDir: string, cluster: string, prefix: string): string {
  const dir = join(statePaths(stateDir).logs(cluster), 'pods');
  if (!existsSync(dir)) return '';
  return readdirSync(dir)
    .filter((f) => f.startsWith(prefix))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

/**
 * Runs a Node snippet as a process inside network namespace `ns` and cgroup `cgroup` from its first
 * instruction (so the BPF programs attached there see its sockets); resolves with its stdout.
 */
export function nodeInSandbox(cgroup: string, ns: string, code: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(cgroup, 'cgroup.procs'), 'ip', 'netns', 'exec', ns, process.execPath, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.on('close', (rc) => (rc === 0 ? resolve(out.trim()) : reject(new Error(`client exited ${rc}: ${out}`))));
  });
}

export function clusterKubeconfig(stateDir: string, cluster: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(statePaths(stateDir).kubeconfig);
  kc.setCurrentContext(`skein-${cluster}`);
  return kc;
}

export function clusterRest(stateDir: string, cluster: string): KubeRest {
  return new KubeRest(clusterKubeconfig(stateDir, cluster));
}

/** Restarts skein-apiserver (a rollout) with extra flags, as an operator would edit its Deployment. */
export async function addApiserverArgs(rest: KubeRest, args: string[]): Promise<void> {
  const deploy = '/apis/apps/v1/namespaces/skein-system/deployments/skein-apiserver';
  const d = await rest.get<{ spec: { template: { spec: { containers: { name: string; args: string[] }[] } } } }>(deploy);
  // By name: the chart's pod runs the mesh etcd beside it.
  const current = d.spec.template.spec.containers.find((c) => c.name === 'apiserver')!;
  await rest.patch(deploy, { spec: { template: { spec: { containers: [{ name: 'apiserver', args: [...current.args, ...args] }] } } } }, 'strategic');
}

/** addApiserverArgs, then waits until the one skein-apiserver pod runs with them, ready and synced. */
export async function rollOutApiserverArgs(rest: KubeRest, args: string[], timeoutMs = 120_000): Promise<void> {
  await addApiserverArgs(rest, args);
  await waitFor(
    `skein-apiserver rolled out with ${args.join(' ')}`,
    async () => {
      const running = (await rest.get<{ items: Pod[] }>('/api/v1/namespaces/skein-system/pods?labelSelector=app%3Dskein-apiserver')).items;
      const [pod] = running;
      const ok = running.length === 1 && args.every((a) => pod!.spec!.containers.find((c) => c.name === 'apiserver')!.args?.includes(a)) && pod!.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      return ok ? true : undefined;
    },
    timeoutMs,
  );
  await waitFor('skein-apiserver synced', async () => ((await rest.get<ExportStatus>(skeinProxyPath('/v1/status'))).synced ? true : undefined), 60_000);
}

export async function pods(rest: KubeRest, selector: string): Promise<Pod[]> {
  return (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/default/pods?labelSelector=${encodeURIComponent(selector)}`)).items;
}

export async function readyPods(rest: KubeRest, selector: string, count: number, timeoutMs = 90_000): Promise<Pod[]> {
  return waitFor(
    `${count} ready pods with ${selector}`,
    async () => {
      const ready = (await pods(rest, selector)).filter((p) => !p.metadata?.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return ready.length === count ? ready : undefined;
    },
    timeoutMs,
  );
}

/** A ServiceAccount `name` and one idle skein-client pod `name` (label app=name) running as it, once ready. */
export async function idlePodAs(rest: KubeRest, name: string): Promise<Pod> {
  await rest.post('/api/v1/namespaces/default/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
  await rest.post('/api/v1/namespaces/default/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { app: name } },
    spec: { serviceAccountName: name, terminationGracePeriodSeconds: 1, containers: [{ name: 'c', image: 'ghcr.io/skein-mesh/skein-client:0.1.0', args: ['idle'] }] },
  });
  return (await readyPods(rest, `app=${name}`, 1))[0]!;
}

export async function scale(rest: KubeRest, deployment: string, replicas: number): Promise<void> {
  await rest.patch(`/apis/apps/v1/namespaces/default/deployments/${deployment}/scale`, { spec: { replicas } });
}

/** Runs the built-in client inside a pod and returns its parsed per-request lines. */
export async function clientRequests(stateDir: string, cluster: string, pod: string, args: string[]): Promise<Outcome[]> {
  const { code, stdout } = await exec({ stateDir, context: `skein-${cluster}`, pod: `default/${pod}`, argv: [...clientCommand(stateDir), ...args], stdio: 'pipe' });
  if (code !== 0) throw new Error(`skein-client ${args.join(' ')} in ${cluster}/${pod} exited ${code}`);
  return stdout.split('\n').flatMap((l) => parseOutcome(l) ?? []);
}

/** The pod's IP once it is running (for requests from other pods). */
export const podIp = (p: Pod) => p.status!.podIP!;

/** The cluster's mesh etcd as its root (the test bed's own identity, like the admin kubeconfig). */
export function meshEtcd(stateDir: string, cluster: string): Etcd3 {
  const state = readState(stateDir);
  const c = state?.clusters.find((x) => x.name === cluster);
  if (!c) throw new Error(`no cluster ${cluster} in ${stateDir}`);
  const pki = meshPki(statePaths(stateDir).cluster(cluster));
  return connectMeshEtcd({ endpoints: [c.meshEtcdUrl], caFile: pki.ca, certFile: pki.rootCert, keyFile: pki.rootKey, serverName: meshEtcdServerName(cluster) });
}

/**
 * One FetchX509SVID call with Skein's own client, from a pod (or, without one, from this process): the
 * client connects first, then the call is timed (`ms`: call -> answer; `connectMs`: loading the client and
 * connecting, the workload's own start-up).
 */
const probeScript = (socket: string, header: boolean) => `
import { workloadApiClient, securityHeader } from '${REPO_ROOT}/dist/mtls/workload-api/client.js';
import grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
const c0 = performance.now();
const c = workloadApiClient('${socket}');
c.waitForReady(Date.now() + 10000, (err) => {
  if (err) { console.log(JSON.stringify({ code: 14, details: err.message })); process.exit(0); }
  const connectMs = performance.now() - c0;
  const t0 = performance.now();
  const call = c.FetchX509SVID({}, ${header ? 'securityHeader()' : 'new grpc.Metadata()'});
  call.on('data', (d) => { const ms = performance.now() - t0; const cert = new X509Certificate(d.svids[0].x509_svid); console.log(JSON.stringify({ ok: d.svids[0].spiffe_id, ms, connectMs, serial: cert.serialNumber, at: Date.now() - ms })); process.exit(0); });
  call.on('error', (e) => { console.log(JSON.stringify({ code: e.code, details: e.details })); process.exit(0); });
});`;

export interface ProbeResult {
  ok?: string;
  ms?: number;
  connectMs?: number;
  /** The SVID's serial number (hex) and when the call was made (ms since the epoch, the host's clock). */
  serial?: string;
  at?: number;
  code?: number;
  details?: string;
}

export async function workloadProbe(stateDir: string, cluster: string, pod: Pod | undefined, socket: string, header = true): Promise<ProbeResult> {
  const argv = ['node', '--input-type=module', '-e', probeScript(socket, header)];
  const out = pod
    ? (await exec({ stateDir, context: `skein-${cluster}`, pod: `${pod.metadata!.namespace}/${pod.metadata!.name}`, argv, stdio: 'pipe' })).stdout
    : execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: REPO_ROOT });
  return JSON.parse(out.trim().split('\n').at(-1)!) as ProbeResult;
}
