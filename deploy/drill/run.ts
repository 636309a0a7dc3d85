// `skein drill`: a failover drill. A client pod streams requests to the service's ClusterIP (through the
// node's socket LB) while the drill faults the service's backends in the client's cluster (--target local)
// or in another one (--target remote), watches that cluster's EndpointSlices, waits for answers from
// another cluster, undoes the fault and waits for answers from the faulted cluster again. The client's
// outcomes come back through the pod's log. Faults: scale (the owners to zero and back) and kill (delete
// the pods, grace 0; the owner recreates them) work through the Kubernetes API only, so the same on the test
// bed, kind or a real cluster; blackhole (the pods stop answering, Kubernetes still sees them ready) drops
// their traffic inside their network namespaces, which only the test bed (`skein local`) can do: the caller
// hands that in (netFaultsFor), so this file never loads the test bed.
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
import { agentEjectedAt, publishesEjections } from './ejection.js';
import { drillReport, type DrillFault, type DrillReport, type DrillTarget } from './report.js';
import type { EndpointSlice, Pod, Service } from '../../mesh/kube/objects.js';
import { IMAGES } from '../version.js';

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
  /** What to do to the backends; default scale. */
  fault?: DrillFault;
  /** Whose backends: the client's cluster (local, the default) or the cluster of remoteKc (remote). */
  target?: DrillTarget;
  /** target remote: the cluster whose backends the drill faults (the same service, meshed with kc's). */
  remoteKc?: KubeConfig;
  /** blackhole: the test bed's network faults for the cluster of a kubeconfig; undefined (or it returns undefined): not a test bed. */
  netFaultsFor?: (kc: KubeConfig) => Promise<NetFaults | undefined>;
  /** Gets the client's outcomes the report was made from (tests check the report against them). */
  onOutcomes?: (outcomes: readonly Outcome[]) => void;
}

/** Network faults inside pods (the blackhole): only a test bed makes them (testbed/faults.ts). */
export interface NetFaults {
  /** For messages: which test bed and cluster. */
  readonly where: string;
  /** The pods' network namespaces, checked to exist, with any rules an earlier drill left removed. */
  locate(pods: readonly { uid: string; node: string }[]): Promise<string[]>;
  /**
   * Drops every packet to and from them but their node's own (its readiness probes); resolves with the moment
   * (ms since the epoch) the first namespace's rules were in place: when the fault began.
   */
  blackhole(netns: readonly string[]): Promise<number>;
  /** Removes what blackhole added; a namespace already gone is fine. */
  restore(netns: readonly string[]): Promise<void>;
}

const BLACKHOLE_NEEDS_TESTBED =
  'the blackhole fault needs `skein local` (it drops traffic inside pod network namespaces); on a real cluster use a NetworkPolicy or your CNI\'s tooling';

export const DEFAULT_CLIENT_IMAGE = IMAGES.client.ref;
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

/** A backend pod the drill faults. */
interface Backend {
  name: string;
  uid: string;
  node: string;
  ip?: string;
}

/**
 * The service's pods in one cluster, and the Deployments and StatefulSets that own them with their replica
 * counts (the drill records itself on those, and scales them for the scale fault).
 */
async function backendsOf(rest: KubeRest, namespace: string, svc: Service, ref: string, cluster: string): Promise<{ owners: Scalable[]; pods: Backend[] }> {
  const selector = Object.entries(svc.spec?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
  if (!selector) throw new Error(`service ${ref} has no selector in ${cluster}: the drill finds its backends, and the workload that owns them, by its selector`);
  const all = (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(selector)}`)).items;
  const paths = new Set<string>();
  for (const pod of all) {
    for (const owner of pod.metadata?.ownerReferences ?? []) {
      if (owner.kind === 'StatefulSet') paths.add(`/apis/apps/v1/namespaces/${namespace}/statefulsets/${owner.name}`);
      if (owner.kind === 'ReplicaSet') {
        const rs = await rest.get<{ metadata: { ownerReferences?: { kind: string; name: string }[] } }>(`/apis/apps/v1/namespaces/${namespace}/replicasets/${owner.name}`);
        for (const o of rs.metadata.ownerReferences ?? []) if (o.kind === 'Deployment') paths.add(`/apis/apps/v1/namespaces/${namespace}/deployments/${o.name}`);
      }
    }
  }
  if (!paths.size) throw new Error(`no Deployment or StatefulSet owns a pod of service ${ref} in ${cluster}: start its backends there first (the drill faults them and their owner brings them back)`);
  const owners: Scalable[] = [];
  for (const path of paths) {
    const scale = await rest.get<{ spec?: { replicas?: number } }>(`${path}/scale`);
    owners.push({ path, replicas: scale.spec?.replicas ?? 0 });
  }
  if (owners.every((o) => o.replicas === 0)) throw new Error(`the backends of ${ref} are already scaled to zero in ${cluster}: scale them up before a drill`);
  const pods = all
    .filter((p) => !p.metadata?.deletionTimestamp && p.status?.phase === 'Running' && p.metadata?.uid && p.metadata.name)
    .map((p) => ({ name: p.metadata!.name!, uid: p.metadata!.uid!, node: p.spec?.nodeName ?? '', ip: p.status?.podIP }));
  return { owners, pods };
}

const setReplicas = (rest: KubeRest, owner: Scalable, replicas: number) => rest.patch(`${owner.path}/scale`, { spec: { replicas } });

/**
 * Recorded on each workload whose backends the drill faults, before it faults them: the fault, the replica
 * count to restore (scale), the network namespaces it blackholed, the drill's client pod and its cluster, and
 * until when the drill vouches for it (renewed while it runs). A drill killed hard (SIGKILL, a lost machine)
 * stops renewing; the next drill finds the expired record and repairs from it.
 */
const DRILL_ANNOTATION = 'skein.io/drill';
const DrillRecord = z.object({
  replicas: z.number().int().min(0),
  pod: z.string(),
  until: z.string().datetime(),
  /** Absent in records of drills before faults existed: scale. */
  fault: z.enum(['scale', 'kill', 'blackhole']).optional(),
  /** blackhole: the pods' network namespaces holding the drill's rules. */
  netns: z.array(z.string()).optional(),
  /** The cluster running the client pod, when not the workload's own (target remote). */
  podCluster: z.string().optional(),
});
type DrillRecord = z.infer<typeof DrillRecord>;
const RECORD_TTL_MS = 20_000;

const writeRecord = (rest: KubeRest, owner: Scalable, record: DrillRecord | null) =>
  rest.patch(owner.path, { metadata: { annotations: { [DRILL_ANNOTATION]: record && JSON.stringify(DrillRecord.parse(record)) } } });

interface Workload {
  metadata?: { name?: string; annotations?: Record<string, string> };
}

/** One cluster the drill touches, for repairs. */
interface RepairScope {
  rest: KubeRest;
  kc: KubeConfig;
  cluster: string;
}

/**
 * Repairs what an earlier drill in `namespace` of `scope`'s cluster left when it was killed hard: workloads
 * whose record expired get their replicas back (scale) or the blackhole removed from their pods' network
 * namespaces (blackhole), and that drill's client pod goes. An unexpired record is a drill in progress:
 * refused, naming it.
 */
async function repairInterruptedDrills(scope: RepairScope, client: RepairScope, namespace: string, netFaultsFor: DrillOptions['netFaultsFor'], progress: (msg: string) => void): Promise<void> {
  const { rest } = scope;
  for (const kind of ['deployments', 'statefulsets']) {
    const base = `/apis/apps/v1/namespaces/${namespace}/${kind}`;
    for (const w of (await rest.get<{ items: Workload[] }>(base)).items) {
      const raw = w.metadata?.annotations?.[DRILL_ANNOTATION];
      if (raw === undefined) continue;
      const ref = `${namespace}/${kind}/${w.metadata?.name}`;
      const record = decodeJson(DrillRecord, raw);
      if (!record) throw new Error(`${ref} in ${scope.cluster} has annotation ${DRILL_ANNOTATION}=${raw}, not a drill record: set its replicas by hand, remove any drill rules from its pods, and remove the annotation`);
      if (Date.parse(record.until) > Date.now()) throw new Error(`another drill is in progress on ${ref} in ${scope.cluster} (client pod ${record.pod}): wait for it to finish and run the drill again`);
      const owner = { path: `${base}/${w.metadata!.name}`, replicas: record.replicas };
      const fault = record.fault ?? 'scale';
      if (fault === 'scale') {
        progress(`repairing an interrupted drill: ${kind}/${w.metadata?.name} back to ${record.replicas} replicas`);
        await setReplicas(rest, owner, record.replicas);
      } else if (fault === 'blackhole' && record.netns?.length) {
        const faults = await netFaultsFor?.(scope.kc);
        if (!faults) throw new Error(`${ref} in ${scope.cluster} was blackholed by an interrupted drill (drop rules left in network namespaces ${record.netns.join(', ')}): run the drill as root on the machine of its test bed to repair it, or remove the pods`);
        progress(`repairing an interrupted drill: removing the blackhole from ${record.netns.length} pod(s) of ${kind}/${w.metadata?.name}`);
        await faults.restore(record.netns);
      } else {
        progress(`repairing an interrupted drill: ${kind}/${w.metadata?.name} (${fault}: its owner already brought the pods back)`);
      }
      await writeRecord(rest, owner, null);
      const podCluster = record.podCluster ?? scope.cluster;
      if (podCluster !== client.cluster) {
        progress(`its client pod ${namespace}/${record.pod} runs in ${podCluster}: it stops on its own; delete it there if you like`);
        continue;
      }
      await client.rest.delete(`/api/v1/namespaces/${namespace}/pods/${record.pod}`, { gracePeriodSeconds: 0 }).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }
}

/** The service's ready endpoints by pod (from its EndpointSlices), telling waiters and listeners of changes. */
class ReadyEndpoints {
  private readonly slices = new Map<string, string[]>();
  private waiters: (() => void)[] = [];
  private readonly listeners: (() => void)[] = [];
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
        else this.slices.set(name, (slice.endpoints ?? []).filter((e) => e.conditions?.ready === true).map((e) => e.targetRef?.uid ?? e.addresses.join(',')));
        for (const l of this.listeners) l();
        for (const w of this.waiters.splice(0)) w();
      },
    });
  }

  get synced(): Promise<void> {
    return this.informer.synced;
  }

  /** Ready endpoints, by their pod's UID. */
  get ready(): string[] {
    return [...this.slices.values()].flat();
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Resolves with the time the condition first held. */
  async until(test: (ready: string[]) => boolean, what: string, timeoutMs: number): Promise<number> {
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

/**
 * Polls the client node's agent view while the fault lasts, for the moment it shows every faulted backend
 * ejected. Stops at once for an agent that does not publish ejections.
 */
class EjectionWatch {
  at?: number;
  private stopped = false;
  private done: Promise<void>;

  constructor(kc: KubeConfig, node: string, frontend: string, ips: ReadonlySet<string>, notBefore: number) {
    this.done = (async () => {
      while (!this.stopped && this.at === undefined && ips.size) {
        const view = await fetchStatus(kc).then((s) => s.agents.find((a) => a.node === node), () => undefined);
        if (view && !publishesEjections(view)) return;
        if (view) this.at = agentEjectedAt(view, frontend, ips, notBefore);
        await sleep(250);
      }
    })();
  }

  async stop(): Promise<number | undefined> {
    this.stopped = true;
    await this.done;
    return this.at;
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
  const fault = opts.fault ?? 'scale';
  const targetKind = opts.target ?? 'local';
  const rest = new KubeRest(kc);
  const { namespace, name } = splitRef(opts.service);
  if (!Number.isInteger(opts.intervalMs) || opts.intervalMs < 1 || opts.intervalMs > 10_000) throw new Error(`--interval-ms ${opts.intervalMs}: use 1..10000`);
  if (targetKind === 'remote' && !opts.remoteKc) throw new Error('--target remote needs --remote-context CONTEXT: the kubeconfig context of the cluster whose backends the drill faults');

  const svc = await globalService(rest, kc, opts.service, namespace, name);
  const annotations = parseGlobalAnnotations(svc.metadata?.annotations);
  if (!annotations.ok) throw new Error(`service ${opts.service}: ${annotations.error}`);
  const affinity = annotations.spec.affinity;
  const vip = svc.spec?.clusterIP;
  if (!vip || vip === 'None') throw new Error(`service ${opts.service} has no ClusterIP (headless): the drill goes through the socket LB, which serves ClusterIPs`);
  const port = pickPort(svc, opts.protocol, opts.port, opts.service);
  const address = `${vip}:${port}`;
  const frontend = `${opts.protocol === 'udp' ? 'UDP' : 'TCP'}/${address}`;

  const status = await fetchStatus(kc);
  const synced = status.remotes.filter((r) => r.connected && r.synced);
  const local: RepairScope = { rest, kc, cluster: status.cluster };
  let target: RepairScope & { svc: Service };
  if (targetKind === 'local') {
    if (!synced.length) throw new Error(`cluster ${status.cluster} has no synced remote cluster to fail over to: run skein connect first (skein status shows the remotes)`);
    if (affinity === 'remote') {
      throw new Error(`service ${opts.service} has affinity remote: traffic from ${status.cluster} goes to other clusters' backends first, so a fault in its local backends shows no failover; drill --target remote --remote-context CONTEXT, or set skein.io/affinity to local or none`);
    }
    target = { ...local, svc };
  } else {
    const remoteKc = opts.remoteKc!;
    const remoteStatus = await fetchStatus(remoteKc);
    const other = remoteStatus.cluster;
    if (other === status.cluster) throw new Error(`--remote-context ${remoteKc.getCurrentContext()} is cluster ${other}, the drill's own (--context): give the context of another cluster`);
    if (!synced.some((r) => r.cluster === other)) {
      throw new Error(`--remote-context ${remoteKc.getCurrentContext()} is cluster ${other}, which ${status.cluster} is not connected to or not synced with: run skein connect --context ${kc.getCurrentContext()} --destination-context ${remoteKc.getCurrentContext()} (skein status shows the remotes)`);
    }
    if (affinity === 'local') {
      throw new Error(`service ${opts.service} has affinity local in ${status.cluster}: its traffic stays on ${status.cluster}'s backends while one is ready, so a fault in ${other}'s backends shows no failover; set skein.io/affinity to remote (or none) on ${opts.service} in ${status.cluster}, or drill --target local`);
    }
    const remoteRest = new KubeRest(remoteKc);
    const remoteSvc = await globalService(remoteRest, remoteKc, opts.service, namespace, name);
    // Somewhere to fail over to: this cluster's own backends or a third cluster's.
    if (!synced.some((r) => r.cluster !== other) && (await readyEndpointCount(rest, namespace, name)) === 0) {
      throw new Error(`nothing to fail over to from ${other}: ${opts.service} has no ready backend in ${status.cluster} and ${status.cluster} has no other remote; start its backends in ${status.cluster} (or connect a third cluster)`);
    }
    target = { rest: remoteRest, kc: remoteKc, cluster: other, svc: remoteSvc };
  }
  let netFaults: NetFaults | undefined;
  if (fault === 'blackhole') {
    netFaults = await opts.netFaultsFor?.(target.kc);
    if (!netFaults) throw new Error(`${BLACKHOLE_NEEDS_TESTBED} (cluster ${target.cluster} is not a cluster of a test bed on this machine)`);
  }

  await repairInterruptedDrills(local, local, namespace, opts.netFaultsFor, progress);
  if (target.cluster !== local.cluster) await repairInterruptedDrills(target, local, namespace, opts.netFaultsFor, progress);
  // Backends a repair just brought back have no pods yet: the drill faults (and measures) the ready ones.
  for (const deadline = Date.now() + opts.stepTimeoutMs; (await readyEndpointCount(target.rest, namespace, name)) === 0; await sleep(250)) {
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.stepTimeoutMs} ms waiting for a ready backend of ${opts.service} in ${target.cluster}: start its backends before a drill`);
  }
  const found = await backendsOf(target.rest, namespace, target.svc, opts.service, target.cluster);
  const owners = found.owners;
  let faulted = found.pods;
  let faultedUids = new Set(faulted.map((p) => p.uid));

  // Bounded: the client stops on its own even if this process dies mid-drill.
  const budgetMs = 3 * opts.phaseMs + 4 * opts.stepTimeoutMs;
  const count = Math.ceil(budgetMs / opts.intervalMs);
  const pod = `skein-drill-${randomBytes(4).toString('hex')}`;
  const endpoints = new ReadyEndpoints(target.kc, target.rest, namespace, name);
  const stream = new OutcomeStream();
  let netns: string[] = [];
  let struck = false;
  let restored = false;
  let renewal: NodeJS.Timeout | undefined;
  let ejection: EjectionWatch | undefined;
  let cleanup: Promise<void> | undefined;
  const undo = async () => {
    if (fault === 'scale') for (const o of owners) await setReplicas(target.rest, o, o.replicas);
    if (fault === 'blackhole') await netFaults!.restore(netns);
  };
  const undoing = () =>
    fault === 'scale' ? `restoring ${owners.map((o) => `${o.path.split('/').slice(-2).join('/')} to ${o.replicas}`).join(', ')}` : fault === 'blackhole' ? `removing the blackhole from ${netns.length} pod(s) in ${target.cluster}` : 'nothing to undo for kill (the owner recreates the pods)';
  // Whatever happens (an error, SIGINT, SIGTERM), the fault is undone and the client goes — once.
  const cleanUp = () =>
    (cleanup ??= (async () => {
      clearInterval(renewal);
      await ejection?.stop();
      let undone = restored || !struck;
      if (!undone) {
        undone = await undo().then(
          () => true,
          (err: Error) => (progress(`could not undo the ${fault} fault in ${target.cluster}: ${err.message} — ${fault === 'scale' ? 'restore the replicas by hand' : 'the next drill repairs it from its record'}`), false),
        );
      }
      // A record stays where the fault could not be undone, so the next drill repairs it.
      if (undone) for (const o of owners) await writeRecord(target.rest, o, null).catch((err: Error) => progress(`could not clear the drill record on ${o.path}: ${err.message}`));
      stream.stop();
      await endpoints.stop();
      await rest.delete(`/api/v1/namespaces/${namespace}/pods/${pod}`, { gracePeriodSeconds: 0 }).catch((err) => {
        if (!isNotFound(err)) progress(`could not delete the drill client pod ${namespace}/${pod}: ${(err as Error).message}`);
      });
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    progress(`${signal}: ${struck && !restored ? undoing() : 'nothing to undo yet'}; removing the client pod`);
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const createdAt = Date.now();
  try {
    await endpoints.synced;
    // A drill that starts without its target backends ready (one just restored by a repair, say) measures nothing.
    await endpoints.until((ready) => ready.some((u) => faultedUids.has(u)), `a backend of ${opts.service} in ${target.cluster} to be ready before the drill`, opts.stepTimeoutMs);
    progress(`starting client pod ${namespace}/${pod} in ${status.cluster}: ${opts.protocol} to ${address} every ${opts.intervalMs} ms`);
    await rest.post(`/api/v1/namespaces/${namespace}/pods`, clientPod(pod, namespace, opts.image, [opts.protocol, address, '--count', String(count), '--interval-ms', String(opts.intervalMs), '--timeout-ms', String(opts.requestTimeoutMs)]));
    const running = await waitRunning(rest, namespace, pod, opts.stepTimeoutMs);
    await stream.follow(kc, namespace, pod);
    await stream.until((all) => (all.some((o) => o.ok) ? true : undefined), 'the first answer to the client', opts.stepTimeoutMs);
    if (stream.outcomes.some((o) => o.ok && !o.cluster)) throw new Error(`the answers of ${opts.service} do not say which cluster sent them: drill a service that answers like skein-echo (JSON with "cluster")`);
    await sleep(opts.phaseMs);

    if (fault === 'blackhole') {
      // Only what Kubernetes reports ready: the point is that it goes on doing so.
      faulted = faulted.filter((p) => endpoints.ready.includes(p.uid));
      faultedUids = new Set(faulted.map((p) => p.uid));
      if (!faulted.length) throw new Error(`no backend of ${opts.service} in ${target.cluster} is ready to blackhole`);
      netns = await netFaults!.locate(faulted);
    }
    const vouch = () =>
      Promise.all(owners.map((o) => writeRecord(target.rest, o, { replicas: o.replicas, pod, until: new Date(Date.now() + RECORD_TTL_MS).toISOString(), fault, ...(netns.length ? { netns } : {}), ...(target.cluster !== status.cluster ? { podCluster: status.cluster } : {}) })));
    await vouch();
    renewal = setInterval(() => void vouch().catch((err: Error) => progress(`could not renew the drill record: ${err.message}`)), RECORD_TTL_MS / 4);
    let stayedReady = true;
    endpoints.onChange(() => {
      if (fault === 'blackhole' && struck && !restored && endpoints.ready.filter((u) => faultedUids.has(u)).length < faultedUids.size) stayedReady = false;
    });
    const names = faulted.map((p) => p.name).join(', ');
    progress(
      fault === 'scale'
        ? `scaling ${owners.map((o) => o.path.split('/').slice(-2).join('/')).join(', ')} in ${target.cluster} to 0`
        : fault === 'kill'
          ? `deleting ${names} in ${target.cluster} with grace 0`
          : `blackholing ${names} in ${target.cluster} (${netFaults!.where})`,
    );
    const takenAt = Date.now();
    ejection = new EjectionWatch(kc, running.spec?.nodeName ?? '', frontend, new Set(faulted.flatMap((p) => p.ip ?? [])), takenAt);
    struck = true;
    if (fault === 'scale') for (const o of owners) await setReplicas(target.rest, o, 0);
    let inEffectAt: number | null = null;
    if (fault === 'kill') {
      // The first deletion the API confirmed: the kill exists for the cluster from then on.
      let deleted = Infinity;
      await Promise.all(faulted.map((p) => target.rest.delete(`/api/v1/namespaces/${namespace}/pods/${p.name}`, { gracePeriodSeconds: 0, preconditions: { uid: p.uid } }).then(
        () => void (deleted = Math.min(deleted, Date.now())),
        (err: unknown) => {
          if (!isNotFound(err)) throw err;
        },
      )));
      if (deleted !== Infinity) inEffectAt = deleted;
    }
    if (fault === 'blackhole') inEffectAt = await netFaults!.blackhole(netns);
    const noneLeft = (ready: string[]) => !ready.some((u) => faultedUids.has(u));
    const lostAt = fault === 'blackhole' ? null : await endpoints.until(noneLeft, `the faulted backends of ${opts.service} in ${target.cluster} to stop being ready`, opts.stepTimeoutMs);
    await stream.until((all) => all.find((o) => o.ok && o.cluster !== target.cluster && o.at >= takenAt), `an answer from a cluster other than ${target.cluster}`, opts.stepTimeoutMs).catch((err: Error) => progress(`no failover: ${err.message}`));

    let restoredAt: number;
    let readyAt: number;
    const replacement = (ready: string[]) => ready.some((u) => !faultedUids.has(u));
    if (fault === 'kill') {
      restoredAt = takenAt;
      readyAt = await endpoints.until(replacement, `a new backend of ${opts.service} in ${target.cluster} to be ready`, opts.stepTimeoutMs);
      restored = true;
    } else {
      await sleep(opts.phaseMs);
      progress(undoing());
      restoredAt = Date.now();
      await undo();
      restored = true;
      readyAt = fault === 'blackhole' ? restoredAt : await endpoints.until(replacement, `a backend of ${opts.service} in ${target.cluster} to be ready again`, opts.stepTimeoutMs);
    }
    const agentAt = await ejection.stop();
    await stream.until((all) => all.find((o) => o.ok && o.cluster === target.cluster && o.at + o.ms >= readyAt), `an answer from ${target.cluster} again`, opts.stepTimeoutMs).catch((err: Error) => progress(`no failback: ${err.message}`));
    await sleep(opts.phaseMs);

    const outcomes = [...stream.outcomes];
    checkClock(outcomes, createdAt, Date.now());
    opts.onOutcomes?.(outcomes);
    return drillReport({
      service: opts.service,
      cluster: status.cluster,
      affinity,
      fault,
      target: targetKind,
      faultedCluster: target.cluster,
      faultedPods: faulted.map((p) => p.name),
      address,
      protocol: opts.protocol,
      intervalMs: opts.intervalMs,
      outcomes,
      events: { takenAt, inEffectAt, lostAt, restoredAt, readyAt, agentEjectedAt: agentAt ?? null },
      faultedStayedReady: stayedReady,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanUp();
  }
}

async function globalService(rest: KubeRest, kc: KubeConfig, ref: string, namespace: string, name: string): Promise<Service> {
  let svc: Service;
  try {
    svc = await rest.get<Service>(`/api/v1/namespaces/${namespace}/services/${name}`);
  } catch (err) {
    if (isNotFound(err)) throw new Error(`--service ${ref}: no such service in context ${kc.getCurrentContext()}`, { cause: err });
    throw err;
  }
  const annotations = parseGlobalAnnotations(svc.metadata?.annotations);
  if (!annotations.ok) throw new Error(`service ${ref}: ${annotations.error}`);
  if (!annotations.spec.global) throw new Error(`service ${ref} is not global: annotate it skein.io/global="true" so other clusters' backends can take over (context ${kc.getCurrentContext()})`);
  return svc;
}

async function readyEndpointCount(rest: KubeRest, namespace: string, service: string): Promise<number> {
  const slices = await rest.get<{ items: EndpointSlice[] }>(`/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices?labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${service}`)}`);
  return slices.items.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready === true).length;
}
