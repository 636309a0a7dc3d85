// `skein drill`: a failover drill through the Kubernetes API only, so it runs the same on the local test bed,
// kind or a real cluster. A client pod streams requests to the service's ClusterIP (through the node's
// socket LB); the drill scales the service's local backends to zero, watches its EndpointSlices for the
// moment the last one stops being ready, waits for answers from another cluster, restores the replicas and
// waits for answers from this cluster again. The client's outcomes come back through the pod's log.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { Writable } from 'node:stream';
import { Log, type KubeConfig } from '@kubernetes/client-node';
import { parseGlobalAnnotations } from '../../mesh/schema/annotations.js';
import { decodeJson } from '../../mesh/schema/values.js';
import { startInformer } from '../../mesh/kube/informer.js';
import { isNotFound, KubeRest } from '../../mesh/kube/rest.js';
import { parseOutcome, type Outcome } from '../images/outcome.js';
import { fetchStatus } from '../cli/status.js';
import { drillReport, type DrillReport } from './report.js';
import type { EndpointSlice, Pod, Service } from '../../mesh/kube/objects.js';

export type DrillProtocol = 'http' | 'tcp' | 'udp';

export interface DrillOptions {
  kc: KubeConfig;
  /** namespace/name */
  service: string;
  protocol: DrillProtocol;
  /** The service port; default: the first port of the protocol's transport (named like the protocol first). */
  port?: number;
  intervalMs: number;
  requestTimeoutMs: number;
  /** How long to watch each steady phase (before, while failed over, after). */
  phaseMs: number;
  /** How long to wait for each step (the loss, the failover, readiness, the failback) before giving up. */
  stepTimeoutMs: number;
  image: string;
  progress: (msg: string) => void;
}

export const DEFAULT_CLIENT_IMAGE = 'ghcr.io/skein-mesh/skein-client:0.1.0';
/** This much clock disagreement between the drill's machine and the client's node is tolerated. */
const CLOCK_TOLERANCE_MS = 1_000;

interface Scalable {
  path: string;
  replicas: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function splitRef(ref: string): { namespace: string; name: string } {
  const m = /^([a-z0-9-]+)\/([a-z0-9.-]+)$/.exec(ref);
  if (!m) throw new Error(`--service "${ref}": expected NAMESPACE/NAME, e.g. default/echo`);
  return { namespace: m[1]!, name: m[2]! };
}

function pickPort(svc: Service, protocol: DrillProtocol, port: number | undefined, ref: string): number {
  const transport = protocol === 'udp' ? 'UDP' : 'TCP';
  const ports = (svc.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === transport);
  const chosen = port !== undefined ? ports.find((p) => p.port === port) : (ports.find((p) => p.name === protocol) ?? ports[0]);
  if (!chosen) {
    const have = (svc.spec?.ports ?? []).map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).join(', ') || 'none';
    throw new Error(`--port: service ${ref} has no ${transport} port${port !== undefined ? ` ${port}` : ''} (it has ${have})`);
  }
  return chosen.port;
}

/** The Deployments and StatefulSets that own the service's pods in this cluster, with their replica counts. */
async function backendOwners(rest: KubeRest, namespace: string, svc: Service, ref: string): Promise<Scalable[]> {
  const selector = Object.entries(svc.spec?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
  if (!selector) throw new Error(`service ${ref} has no selector: the drill takes backends away by scaling the workload that owns them`);
  const pods = (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(selector)}`)).items;
  const paths = new Set<string>();
  for (const pod of pods) {
    for (const owner of pod.metadata?.ownerReferences ?? []) {
      if (owner.kind === 'StatefulSet') paths.add(`/apis/apps/v1/namespaces/${namespace}/statefulsets/${owner.name}`);
      if (owner.kind === 'ReplicaSet') {
        const rs = await rest.get<{ metadata: { ownerReferences?: { kind: string; name: string }[] } }>(`/apis/apps/v1/namespaces/${namespace}/replicasets/${owner.name}`);
        for (const o of rs.metadata.ownerReferences ?? []) if (o.kind === 'Deployment') paths.add(`/apis/apps/v1/namespaces/${namespace}/deployments/${o.name}`);
      }
    }
  }
  if (!paths.size) throw new Error(`no Deployment or StatefulSet owns a pod of service ${ref} in this cluster: start its local backends first (the drill scales them to zero and back)`);
  const owners: Scalable[] = [];
  for (const path of paths) {
    const scale = await rest.get<{ spec?: { replicas?: number } }>(`${path}/scale`);
    owners.push({ path, replicas: scale.spec?.replicas ?? 0 });
  }
  if (owners.every((o) => o.replicas === 0)) throw new Error(`the backends of ${ref} are already scaled to zero here: scale them up before a drill`);
  return owners;
}

const setReplicas = (rest: KubeRest, owner: Scalable, replicas: number) => rest.patch(`${owner.path}/scale`, { spec: { replicas } });

/**
 * Recorded on each workload the drill scales, before it scales: the replica count to restore, the drill's
 * client pod, and until when the drill vouches for it (renewed while it runs). A drill killed hard (SIGKILL,
 * a lost machine) stops renewing; the next drill finds the expired record and restores from it.
 */
const DRILL_ANNOTATION = 'skein.io/drill';
const DrillRecord = z.object({ replicas: z.number().int().min(0), pod: z.string(), until: z.string().datetime() });
type DrillRecord = z.infer<typeof DrillRecord>;
const RECORD_TTL_MS = 20_000;

const writeRecord = (rest: KubeRest, owner: Scalable, record: DrillRecord | null) =>
  rest.patch(owner.path, { metadata: { annotations: { [DRILL_ANNOTATION]: record && JSON.stringify(DrillRecord.parse(record)) } } });

interface Workload {
  metadata?: { name?: string; annotations?: Record<string, string> };
}

/**
 * Repairs what an earlier drill in `namespace` left when it was killed hard: workloads whose record expired
 * get their replicas back, and that drill's client pod goes. An unexpired record is a drill in progress:
 * refused, naming it.
 */
async function repairInterruptedDrills(rest: KubeRest, namespace: string, progress: (msg: string) => void): Promise<void> {
  for (const kind of ['deployments', 'statefulsets']) {
    const base = `/apis/apps/v1/namespaces/${namespace}/${kind}`;
    for (const w of (await rest.get<{ items: Workload[] }>(base)).items) {
      const raw = w.metadata?.annotations?.[DRILL_ANNOTATION];
      if (raw === undefined) continue;
      const ref = `${namespace}/${kind}/${w.metadata?.name}`;
      const record = decodeJson(DrillRecord, raw);
      if (!record) throw new Error(`${ref} has annotation ${DRILL_ANNOTATION}=${raw}, not a drill record: set its replicas by hand and remove the annotation`);
      if (Date.parse(record.until) > Date.now()) throw new Error(`another drill is in progress on ${ref} (client pod ${record.pod}): wait for it to finish and run the drill again`);
      progress(`repairing an interrupted drill: ${kind}/${w.metadata?.name} back to ${record.replicas} replicas`);
      const owner = { path: `${base}/${w.metadata!.name}`, replicas: record.replicas };
      await setReplicas(rest, owner, record.replicas);
      await writeRecord(rest, owner, null);
      await rest.delete(`/api/v1/namespaces/${namespace}/pods/${record.pod}`, { gracePeriodSeconds: 0 }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }
}

/** Counts ready endpoints of the service from its EndpointSlices, and tells waiters when the count changes. */
class ReadyEndpoints {
  private readonly slices = new Map<string, number>();
  private waiters: (() => void)[] = [];
  private informer;

  constructor(kc: KubeConfig, rest: KubeRest, namespace: string, service: string) {
    const path = `/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`;
    const labelSelector = `kubernetes.io/service-name=${service}`;
    this.informer = startInformer<EndpointSlice>({
      kc,
      path,
      labelSelector,
      list: () => rest.list(`${path}?labelSelector=${encodeURIComponent(labelSelector)}`),
      onEvent: (type, slice) => {
        const name = slice.metadata?.name ?? '';
        if (type === 'delete') this.slices.delete(name);
        else this.slices.set(name, (slice.endpoints ?? []).filter((e) => e.conditions?.ready === true).length);
        for (const w of this.waiters.splice(0)) w();
      },
    });
  }

  get synced(): Promise<void> {
    return this.informer.synced;
  }

  get ready(): number {
    let n = 0;
    for (const v of this.slices.values()) n += v;
    return n;
  }

  /** Resolves with the time the condition first held. */
  async until(test: (ready: number) => boolean, what: string, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (!test(this.ready)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return Date.now();
  }

  stop(): Promise<void> {
    return this.informer.stop();
  }
}

/** The client pod's outcomes as they arrive on its followed log. */
class OutcomeStream {
  readonly outcomes: Outcome[] = [];
  private partial = '';
  private waiters: (() => void)[] = [];
  private abort?: AbortController;
  readonly sink = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      const lines = (this.partial + chunk.toString('utf8')).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        const o = parseOutcome(line);
        if (o) this.outcomes.push(o);
      }
      for (const w of this.waiters.splice(0)) w();
      done();
    },
  });

  async follow(kc: KubeConfig, namespace: string, pod: string): Promise<void> {
    this.abort = await new Log(kc).log(namespace, pod, 'client', this.sink, { follow: true });
  }

  async until<T>(find: (all: readonly Outcome[]) => T | undefined, what: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = find(this.outcomes);
      if (hit !== undefined) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  stop(): void {
    this.abort?.abort();
  }
}

function clientPod(name: string, namespace: string, image: string, args: string[]): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { 'app.kubernetes.io/name': 'skein-drill', 'app.kubernetes.io/managed-by': 'skein' } },
    spec: {
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'client', image, args }],
    },
  };
}

async function waitRunning(rest: KubeRest, namespace: string, name: string, timeoutMs: number): Promise<Pod> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pod = await rest.get<Pod>(`/api/v1/namespaces/${namespace}/pods/${name}`);
    const phase = pod.status?.phase;
    if (phase === 'Running' || phase === 'Succeeded') return pod;
    const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting;
    if (phase === 'Failed' || waiting?.reason === 'ErrImagePull' || waiting?.reason === 'ImagePullBackOff') {
      throw new Error(`drill client pod ${namespace}/${name} cannot run: ${waiting?.reason ?? phase} ${waiting?.message ?? ''} (is --image pullable here?)`);
    }
    if (Date.now() > deadline) throw new Error(`drill client pod ${namespace}/${name} not running after ${timeoutMs} ms (phase ${phase ?? 'unknown'})`);
    await sleep(100);
  }
}

function checkClock(outcomes: readonly Outcome[], from: number, to: number): void {
  const off = outcomes.find((o) => o.at < from - CLOCK_TOLERANCE_MS || o.at > to + CLOCK_TOLERANCE_MS);
  if (off) {
    throw new Error(`the node's clock is off from this machine's by more than ${CLOCK_TOLERANCE_MS} ms (a request stamped ${new Date(off.at).toISOString()}): the drill's times would be wrong; sync the clocks (NTP) and run it again`);
  }
}

export async function runDrill(opts: DrillOptions): Promise<DrillReport> {
  const { kc, progress } = opts;
  const rest = new KubeRest(kc);
  const { namespace, name } = splitRef(opts.service);
  if (!Number.isInteger(opts.intervalMs) || opts.intervalMs < 1 || opts.intervalMs > 10_000) throw new Error(`--interval-ms ${opts.intervalMs}: use 1..10000`);

  let svc: Service;
  try {
    svc = await rest.get<Service>(`/api/v1/namespaces/${namespace}/services/${name}`);
  } catch (err) {
    if (isNotFound(err)) throw new Error(`--service ${opts.service}: no such service in context ${kc.getCurrentContext()}`, { cause: err });
    throw err;
  }
  const annotations = parseGlobalAnnotations(svc.metadata?.annotations);
  if (!annotations.ok) throw new Error(`service ${opts.service}: ${annotations.error}`);
  if (!annotations.spec.global) throw new Error(`service ${opts.service} is not global: annotate it skein.io/global="true" so other clusters' backends can take over`);
  const vip = svc.spec?.clusterIP;
  if (!vip || vip === 'None') throw new Error(`service ${opts.service} has no ClusterIP (headless): the drill goes through the socket LB, which serves ClusterIPs`);
  const port = pickPort(svc, opts.protocol, opts.port, opts.service);
  const target = `${vip}:${port}`;

  const status = await fetchStatus(kc);
  if (!status.remotes.some((r) => r.connected && r.synced)) throw new Error(`cluster ${status.cluster} has no synced remote cluster to fail over to: run skein connect first (skein status shows the remotes)`);
  await repairInterruptedDrills(rest, namespace, progress);
  const owners = await backendOwners(rest, namespace, svc, opts.service);

  // Bounded: the client stops on its own even if this process dies mid-drill.
  const budgetMs = 3 * opts.phaseMs + 4 * opts.stepTimeoutMs;
  const count = Math.ceil(budgetMs / opts.intervalMs);
  const pod = `skein-drill-${randomBytes(4).toString('hex')}`;
  const endpoints = new ReadyEndpoints(kc, rest, namespace, name);
  const stream = new OutcomeStream();
  let restored = false;
  let renewal: NodeJS.Timeout | undefined;
  let cleanup: Promise<void> | undefined;
  // Whatever happens (an error, SIGINT, SIGTERM), the backends come back and the client goes — once.
  const cleanUp = () =>
    (cleanup ??= (async () => {
      clearInterval(renewal);
      for (const o of owners) {
        if (!restored) await setReplicas(rest, o, o.replicas).catch((err: Error) => progress(`could not restore ${o.path} to ${o.replicas} replicas: ${err.message} — restore it by hand`));
        await writeRecord(rest, o, null).catch((err: Error) => progress(`could not clear the drill record on ${o.path}: ${err.message}`));
      }
      stream.stop();
      await endpoints.stop();
      await rest.delete(`/api/v1/namespaces/${namespace}/pods/${pod}`, { gracePeriodSeconds: 0 }).catch((err) => {
        if (!isNotFound(err)) progress(`could not delete the drill client pod ${namespace}/${pod}: ${(err as Error).message}`);
      });
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    progress(`${signal}: restoring ${owners.map((o) => `${o.path.split('/').slice(-2).join('/')} to ${o.replicas}`).join(', ')} and removing the client pod`);
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const createdAt = Date.now();
  try {
    await endpoints.synced;
    // A drill that starts without a ready local backend (one just restored by a repair, say) measures nothing.
    await endpoints.until((n) => n > 0, `a local endpoint of ${opts.service} to be ready before the drill`, opts.stepTimeoutMs);
    progress(`starting client pod ${namespace}/${pod}: ${opts.protocol} to ${target} every ${opts.intervalMs} ms`);
    await rest.post(`/api/v1/namespaces/${namespace}/pods`, clientPod(pod, namespace, opts.image, [opts.protocol, target, '--count', String(count), '--interval-ms', String(opts.intervalMs), '--timeout-ms', String(opts.requestTimeoutMs)]));
    await waitRunning(rest, namespace, pod, opts.stepTimeoutMs);
    await stream.follow(kc, namespace, pod);
    await stream.until((all) => (all.some((o) => o.ok) ? true : undefined), 'the first answer to the client', opts.stepTimeoutMs);
    if (stream.outcomes.some((o) => o.ok && !o.cluster)) throw new Error(`the answers of ${opts.service} do not say which cluster sent them: drill a service that answers like skein-echo (JSON with "cluster")`);
    await sleep(opts.phaseMs);

    progress(`scaling ${owners.map((o) => o.path.split('/').slice(-2).join('/')).join(', ')} in ${status.cluster} to 0`);
    const vouch = () => Promise.all(owners.map((o) => writeRecord(rest, o, { replicas: o.replicas, pod, until: new Date(Date.now() + RECORD_TTL_MS).toISOString() })));
    await vouch();
    renewal = setInterval(() => void vouch().catch((err: Error) => progress(`could not renew the drill record: ${err.message}`)), RECORD_TTL_MS / 4);
    const takenAt = Date.now();
    for (const o of owners) await setReplicas(rest, o, 0);
    const lostAt = await endpoints.until((n) => n === 0, `the last local endpoint of ${opts.service} to stop being ready`, opts.stepTimeoutMs);
    await stream.until((all) => all.find((o) => o.ok && o.cluster !== status.cluster && o.at >= takenAt), 'an answer from another cluster', opts.stepTimeoutMs).catch((err: Error) => progress(`no failover: ${err.message}`));
    await sleep(opts.phaseMs);

    progress(`restoring ${owners.map((o) => `${o.replicas} replicas`).join(', ')}`);
    const restoredAt = Date.now();
    for (const o of owners) await setReplicas(rest, o, o.replicas);
    restored = true;
    const readyAt = await endpoints.until((n) => n > 0, `a local endpoint of ${opts.service} to be ready again`, opts.stepTimeoutMs);
    await stream.until((all) => all.find((o) => o.ok && o.cluster === status.cluster && o.at + o.ms >= readyAt), `an answer from ${status.cluster} again`, opts.stepTimeoutMs).catch((err: Error) => progress(`no failback: ${err.message}`));
    await sleep(opts.phaseMs);

    const outcomes = [...stream.outcomes];
    checkClock(outcomes, createdAt, Date.now());
    return drillReport({ service: opts.service, cluster: status.cluster, affinity: annotations.spec.affinity, target, protocol: opts.protocol, intervalMs: opts.intervalMs, outcomes, events: { takenAt, lostAt, restoredAt, readyAt } });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanUp();
  }
}
