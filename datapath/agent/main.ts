// skein-agent: one per node. Programs the node's BPF socket LB from its own cluster's mesh etcd only and
// serves /healthz, /metrics and /v1/programmed (what the datapath holds now, what it refused, and the backends
// outlier detection ejected); with --workload-socket also the SPIFFE Workload API for the node's pods (and /v1/workload).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Fastify from 'fastify';
import { pino, type Logger } from 'pino';
import { KubeConfig } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { KubeRest } from '../../mesh/kube/rest.js';
import { WorkloadApiServer } from '../../mtls/workload-api/server.js';
import { podCgroupParent } from './workload/attest.js';
import { AgentIdentitySource } from './workload/identity-source.js';
import { Counter, Gauge, Registry } from 'prom-client';
import { z } from 'zod';
import { ClusterName } from '../../mesh/schema/cluster.js';
import { connectMeshEtcd } from '../../mesh/etcd.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { kernelHz, SocketLb } from '../socket-lb.js';
import { kernelRoutes } from '../kernel-routes.js';
import { nativeAddon } from '../native-addon.js';
import { NodeAgent } from './agent.js';
import { PeerRoutes } from './peer-routes.js';
import { removeEmptyParents, UninstallWatch, type Verdict } from './uninstall.js';
import { waitAtMost } from '../../mesh/wait-at-most.js';
import { OUTLIER_DEFAULTS } from './outliers.js';
import { NodeIdentityRenewal } from './node-identity-renewal.js';
import { SwappableCredentials } from '../../mtls/swappable-credentials.js';

const Config = z.object({
  clusterName: ClusterName,
  nodeName: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, '--node-name (this Kubernetes node, as in spec.nodeName) is required'),
  meshEtcd: z.string().regex(/^https?:\/\/[^/\s]+$/, '--mesh-etcd must be a URL such as https://10.0.0.1:2379'),
  meshEtcdCa: z.string().optional(),
  meshEtcdCert: z.string().optional(),
  meshEtcdKey: z.string().optional(),
  cgroup: z.string().min(1, '--cgroup (the cgroup v2 directory whose processes are load-balanced) is required'),
  pinDir: z.string().startsWith('/sys/fs/bpf/', '--pin-dir must be under /sys/fs/bpf (bpffs)'),
  listen: z.string().regex(/^[^:]+:\d+$/, '--listen must be HOST:PORT'),
  /** The SPIFFE Workload API: a unix socket path, plus the node's certificate for the node CA. */
  workloadSocket: z.string().startsWith('/', '--workload-socket must be an absolute path').optional(),
  nodeCert: z.string().optional(),
  nodeKey: z.string().optional(),
  /** Where this node's pod cgroups live (/kubepods for a kubelet with cgroupfs); default: --cgroup. */
  podCgroupParents: z.array(z.string().startsWith('/', '--pod-cgroup-parent must be an absolute path')),
  kubeconfig: z.string().optional(),
  /** The DaemonSet this agent runs in (NAMESPACE/NAME): its deletion means uninstall (uninstall.ts). */
  daemonSet: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, '--daemonset must be NAMESPACE/NAME of the agent DaemonSet, e.g. skein-system/skein-agent')
    .optional(),
  /** Backend health from the datapath and outlier detection (outliers.ts; defaults there and below). */
  healthPollMs: z.coerce.number().int().min(10, '--health-poll-ms must be at least 10').max(10_000),
  outlierFailures: z.coerce.number().int().min(0).max(1000),
  outlierBaseEjectionMs: z.coerce.number().int().min(1).max(3_600_000),
  outlierMaxEjectionMs: z.coerce.number().int().min(1).max(3_600_000),
  outlierMaxEjectedPercent: z.coerce.number().int().min(0).max(100),
  udpAnswerWindowMs: z.coerce.number().int().min(1).max(60_000),
  /** Initial SYN RTO of connects the LB rewrites (0: the kernel's 1 s). */
  synRtoMs: z.coerce.number().int().min(0).max(120_000),
  /** Active probes (prober.ts): timeout, bound per node, recovery cadence (0: no probes). */
  probeTimeoutMs: z.coerce.number().int().min(1, '--probe-timeout-ms must be at least 1').max(60_000),
  probeMaxInFlight: z.coerce.number().int().min(1, '--probe-max-in-flight must be at least 1').max(10_000),
  recoveryProbeMs: z.coerce.number().int().min(0).max(3_600_000),
  failureSignalMs: z.coerce.number().int().min(0).max(10_000),
  peerRoutes: z.boolean(),
  /** A connection whose request went out but that got no byte back this long: probe its backend (0: off). */
  stallMs: z.coerce.number().int().min(0).max(600_000),
});

const NUMERIC_FLAGS = {
  'health-poll-ms': '100',
  'outlier-consecutive-failures': String(OUTLIER_DEFAULTS.consecutiveFailures),
  'outlier-base-ejection-ms': String(OUTLIER_DEFAULTS.baseEjectionMs),
  'outlier-max-ejection-ms': String(OUTLIER_DEFAULTS.maxEjectionMs),
  'outlier-max-ejected-percent': String(OUTLIER_DEFAULTS.maxEjectedPercent),
  'udp-answer-window-ms': String(OUTLIER_DEFAULTS.udpAnswerWindowMs),
  'syn-rto-ms': '200',
  'probe-timeout-ms': '200',
  'probe-max-in-flight': '32',
  'recovery-probe-ms': String(OUTLIER_DEFAULTS.recoveryProbeMs),
  'failure-signal-ms': '20',
  'stall-ms': String(OUTLIER_DEFAULTS.stallMs),
} as const;

const STRING_FLAGS = ['cluster-name', 'node-name', 'mesh-etcd', 'mesh-etcd-ca', 'mesh-etcd-cert', 'mesh-etcd-key', 'cgroup', 'pin-dir', 'listen', 'workload-socket', 'node-cert', 'node-key', 'kubeconfig', 'daemonset'] as const;

function config() {
  const { values } = parseArgs({
    options: {
      ...(Object.fromEntries(STRING_FLAGS.map((k) => [k, { type: 'string' as const }])) as Record<(typeof STRING_FLAGS)[number], { type: 'string' }>),
      'pod-cgroup-parent': { type: 'string', multiple: true },
      'peer-routes': { type: 'boolean', default: false },
      ...(Object.fromEntries(Object.entries(NUMERIC_FLAGS).map(([k, d]) => [k, { type: 'string' as const, default: d }])) as Record<keyof typeof NUMERIC_FLAGS, { type: 'string'; default: string }>),
    },
  });
  const parsed = Config.safeParse({
    clusterName: values['cluster-name'],
    nodeName: values['node-name'] ?? process.env.NODE_NAME ?? '',
    meshEtcd: values['mesh-etcd'],
    meshEtcdCa: values['mesh-etcd-ca'],
    meshEtcdCert: values['mesh-etcd-cert'],
    meshEtcdKey: values['mesh-etcd-key'],
    cgroup: values.cgroup ?? '',
    pinDir: values['pin-dir'] ?? '',
    listen: values.listen ?? '127.0.0.1:9877',
    workloadSocket: values['workload-socket'],
    nodeCert: values['node-cert'],
    nodeKey: values['node-key'],
    podCgroupParents: values['pod-cgroup-parent'] ?? (values.cgroup ? [values.cgroup] : []),
    kubeconfig: values.kubeconfig ?? process.env.KUBECONFIG,
    daemonSet: values.daemonset,
    healthPollMs: values['health-poll-ms'],
    outlierFailures: values['outlier-consecutive-failures'],
    outlierBaseEjectionMs: values['outlier-base-ejection-ms'],
    outlierMaxEjectionMs: values['outlier-max-ejection-ms'],
    outlierMaxEjectedPercent: values['outlier-max-ejected-percent'],
    udpAnswerWindowMs: values['udp-answer-window-ms'],
    synRtoMs: values['syn-rto-ms'],
    probeTimeoutMs: values['probe-timeout-ms'],
    probeMaxInFlight: values['probe-max-in-flight'],
    recoveryProbeMs: values['recovery-probe-ms'],
    failureSignalMs: values['failure-signal-ms'],
    peerRoutes: values['peer-routes'],
    stallMs: values['stall-ms'],
  });
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    console.error(`skein-agent: ${String(i.path[0])}: ${i.message}`);
    process.exit(2);
  }
  if (parsed.data.workloadSocket && !(parsed.data.nodeCert && parsed.data.nodeKey && parsed.data.meshEtcdCa)) {
    console.error('skein-agent: --workload-socket needs --node-cert and --node-key (the node certificate the node CA authenticates) and --mesh-etcd-ca (the mesh CA that signed the node CA)');
    process.exit(2);
  }
  if (!existsSync(parsed.data.cgroup)) {
    console.error(`skein-agent: --cgroup ${parsed.data.cgroup} does not exist`);
    process.exit(2);
  }
  try {
    // As /proc/<pid>/cgroup names them: a directory under the cgroup2 mount becomes its cgroup path.
    return { ...parsed.data, podCgroupParents: parsed.data.podCgroupParents.map((p) => podCgroupParent(p)) };
  } catch (err) {
    console.error(`skein-agent: ${(err as Error).message}`);
    process.exit(2);
  }
}

/**
 * The node identity as the agent dials with it: one set of credentials for the mesh etcd and the node CA
 * channel, renewed (node-identity-renewal.ts) when the node CA is reachable, i.e. with the Workload API on.
 * Absent: the etcd client reads its files once, as before (--mesh-etcd-cert other than --node-cert).
 */
function nodeCredentials(cfg: ReturnType<typeof config>): SwappableCredentials | undefined {
  if (!cfg.nodeCert || !cfg.nodeKey || !cfg.meshEtcdCa) return undefined;
  return new SwappableCredentials(readFileSync(cfg.meshEtcdCa, 'utf8'), { certPem: readFileSync(cfg.nodeCert, 'utf8'), keyPem: readFileSync(cfg.nodeKey, 'utf8') });
}

function kubeConfigOf(cfg: ReturnType<typeof config>): KubeConfig {
  const kc = new KubeConfig();
  if (cfg.kubeconfig) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

/** The SPIFFE Workload API for the pods of this node. */
async function startWorkloadApi(cfg: ReturnType<typeof config>, etcd: Etcd3, nodeTls: SwappableCredentials, log: Logger, onViewChange: () => void) {
  const kc = kubeConfigOf(cfg);
  // Callers are attested only from a pod cgroup directly under one of these (attest.ts).
  log.info({ podCgroupParents: cfg.podCgroupParents }, 'attesting callers from pod cgroups under these cgroups');
  const source = new AgentIdentitySource({
    etcd,
    cluster: cfg.clusterName,
    node: cfg.nodeName,
    kc,
    rest: new KubeRest(kc),
    nodeTls: nodeTls.channelCredentials,
    log,
    podCgroupParents: cfg.podCgroupParents,
    onViewChange,
  });
  await source.start();
  const server = new WorkloadApiServer(source, (m) => log.warn(m));
  await server.listen(cfg.workloadSocket!);
  log.info({ socket: cfg.workloadSocket }, 'SPIFFE Workload API serving');
  return { source, server };
}

/** Follows the agent's DaemonSet (--daemonset) so that at shutdown it knows an uninstall from an upgrade. */
function watchForUninstall(cfg: ReturnType<typeof config>, log: Logger): UninstallWatch | undefined {
  if (!cfg.daemonSet) return undefined;
  const [namespace, name] = cfg.daemonSet.split('/') as [string, string];
  const kc = kubeConfigOf(cfg);
  const watch = new UninstallWatch({ kc, rest: new KubeRest(kc), namespace, name, log });
  watch.start();
  return watch;
}

const BPF_FS_MAGIC = 0xcafe4a11;
const BPFFS = '/sys/fs/bpf';

/** Pins need bpffs at /sys/fs/bpf; mount it where the host has not (the image has no stat(1): statfs here). */
function ensureBpffs(): void {
  if (existsSync(BPFFS) && statfsSync(BPFFS).type === BPF_FS_MAGIC) return;
  mkdirSync(BPFFS, { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS]);
}

async function main(): Promise<void> {
  const cfg = config();
  // SKEIN_LOG_LEVEL=debug also logs every move of the datapath's failure counters (timing a drill's tail).
  const log = pino({ level: process.env.SKEIN_LOG_LEVEL ?? 'info', base: { cluster: cfg.clusterName, node: cfg.nodeName, component: 'agent' } });
  ensureBpffs();
  const lb = new SocketLb(join(cfg.pinDir, 'maps'));
  const replaced = lb.pinnedMapsReplaced();
  if (replaced.length) log.warn({ maps: replaced }, 'pinned maps of an older datapath had another layout: made afresh (their state is programmed again; health counters start over)');
  const obsolete = lb.removeObsoletePins();
  if (obsolete.length) log.info({ pins: obsolete }, 'removed pins of maps this datapath no longer has');
  lb.attach(cfg.cgroup, join(cfg.pinDir, 'links'));
  const hz = kernelHz();
  log.info({ synRtoMs: cfg.synRtoMs, jiffies: lb.setSynRto(cfg.synRtoMs, hz), hz }, 'SYN RTO of load-balanced connects set');
  const nodeTls = nodeCredentials(cfg);
  // The etcd user is the node identity when both flags name the same files: then it is renewed too.
  const sameIdentity = nodeTls && cfg.meshEtcdCert === cfg.nodeCert && cfg.meshEtcdKey === cfg.nodeKey;
  const etcd = connectMeshEtcd({ endpoints: [cfg.meshEtcd], caFile: cfg.meshEtcdCa, certFile: cfg.meshEtcdCert, keyFile: cfg.meshEtcdKey, renewing: sameIdentity ? nodeTls : undefined, serverName: meshEtcdServerName(cfg.clusterName) });
  const routes = new PeerRoutes({ table: kernelRoutes, log });
  // Turned off (helm upgrade with agent.peerRoutes false): the routes an earlier agent made go.
  if (!cfg.peerRoutes) {
    const removed = routes.removeAll();
    if (removed) log.info({ removed }, 'peer routes are off: removed the routes to remote pods an earlier agent installed');
  }
  const agent = new NodeAgent({
    etcd,
    cluster: cfg.clusterName,
    node: cfg.nodeName,
    lb,
    log,
    health: lb,
    healthPollMs: cfg.healthPollMs,
    failureSignalMs: cfg.failureSignalMs,
    routes: cfg.peerRoutes ? routes : undefined,
    probe: cfg.recoveryProbeMs > 0 ? { timeoutMs: cfg.probeTimeoutMs, maxInFlight: cfg.probeMaxInFlight } : undefined,
    outliers: {
      consecutiveFailures: cfg.outlierFailures,
      baseEjectionMs: cfg.outlierBaseEjectionMs,
      maxEjectionMs: Math.max(cfg.outlierMaxEjectionMs, cfg.outlierBaseEjectionMs),
      maxEjectedPercent: cfg.outlierMaxEjectedPercent,
      udpAnswerWindowMs: cfg.udpAnswerWindowMs,
      recoveryProbeMs: cfg.recoveryProbeMs,
      stallMs: cfg.stallMs,
    },
  });

  const registry = new Registry();
  new Gauge({ name: 'skein_agent_frontends', help: 'Service frontends programmed in BPF', registers: [registry], collect() { this.set(agent.dump().length); } });
  new Gauge({ name: 'skein_agent_backends', help: 'Active backend slots programmed in BPF', registers: [registry], collect() { this.set(agent.dump().reduce((n, p) => n + p.backends.length, 0)); } });
  new Gauge({ name: 'skein_agent_reconciles', help: 'Reconciliations of the datapath', registers: [registry], collect() { this.set(agent.syncs); } });
  new Gauge({ name: 'skein_agent_last_reconcile_seconds', help: 'Duration of the last reconciliation', registers: [registry], collect() { this.set(agent.lastSyncMs / 1000); } });
  // By reason only: a label per frontend would grow without bound; /v1/programmed and the view name them.
  new Gauge({
    name: 'skein_agent_failing_frontends',
    help: 'Frontends the datapath refused (each keeps its previous programming and is retried on its own), by reason',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const reason of ['too-many-backends', 'map-full', 'bad-address', 'kernel']) this.set({ reason }, 0);
      for (const f of agent.failures().values()) this.inc({ reason: f.reason });
    },
  });
  new Gauge({
    name: 'skein_agent_bpf_map_entries',
    help: 'Entries in use of a socket-LB map (compare skein_agent_bpf_map_max_entries: a full map refuses new services)',
    labelNames: ['map'],
    registers: [registry],
    collect() {
      const u = lb.usage();
      this.set({ map: 'skein_services' }, u.servicesMapEntries);
      this.set({ map: 'skein_backends' }, u.backendsMapEntries);
    },
  });
  new Gauge({
    name: 'skein_agent_bpf_map_max_entries',
    help: 'Capacity of a socket-LB map',
    labelNames: ['map'],
    registers: [registry],
    collect() {
      this.set({ map: 'skein_services' }, lb.limits.servicesMapEntries);
      this.set({ map: 'skein_backends' }, lb.limits.backendsMapEntries);
      this.set({ map: 'skein_health' }, lb.limits.healthMapEntries);
    },
  });
  new Gauge({ name: 'skein_agent_ejected_backends', help: 'Backends outlier detection took out of active sets now (failures seen by this node)', registers: [registry], collect() { this.set(agent.outliers.ejectedKeys().size); } });
  new Counter({
    name: 'skein_agent_backend_failures_total',
    help: 'Backend failures seen by this node: TCP SYN timeouts and connects that died connecting, UDP datagrams unanswered past the window',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(agent.outliers.failuresTotal);
    },
  });
  new Counter({
    name: 'skein_agent_backend_probes_total',
    help: 'Active TCP probes this node started (failing, suspected and ejected backends)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(agent.prober?.started ?? 0);
    },
  });
  new Counter({
    name: 'skein_agent_backend_ejections_total',
    help: 'Ejections of backends by outlier detection',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(agent.outliers.ejectionsTotal);
    },
  });
  new Gauge({
    name: 'skein_agent_bpf_health_entries',
    help: 'Backends with health counters in skein_health (an LRU map; compare skein_agent_bpf_map_max_entries{map="skein_health"})',
    registers: [registry],
    collect() {
      this.set(lb.readHealth().size);
    },
  });
  const http = Fastify();
  http.get('/healthz', async () => 'ok\n');
  http.get('/metrics', async (_q, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  http.get('/v1/programmed', async () => ({ cluster: cfg.clusterName, cgroup: cfg.cgroup, frontends: agent.dump(), failing: Object.fromEntries(agent.failures()), ejected: agent.ejections(), health: Object.fromEntries(agent.outliers.failureCounts()) }));
  // The node view carries what the Workload API serves (`skein ca rotate` waits on it).
  let viewChanged = () => {};
  const workload = cfg.workloadSocket && nodeTls ? await startWorkloadApi(cfg, etcd, nodeTls, log, () => viewChanged()) : undefined;
  const nodeIdentity =
    workload && nodeTls
      ? new NodeIdentityRenewal({ node: cfg.nodeName, files: { cert: cfg.nodeCert!, key: cfg.nodeKey! }, credentials: nodeTls, renew: (csrPem) => workload.source.renewNodeIdentity(csrPem), onRenewed: () => workload.source.reconnectNodeCa(), log })
      : undefined;
  nodeIdentity?.start();
  if (nodeIdentity) {
    new Gauge({ name: 'skein_node_identity_expiry_seconds', help: 'When the node identity new handshakes present expires (Unix seconds); renewed at half its lifetime', registers: [registry], collect() { this.set(Date.parse(nodeIdentity.current.validTo) / 1000); } });
    new Counter({ name: 'skein_node_identity_renewals_total', help: 'Renewals of the node identity', registers: [registry], collect() { this.reset(); this.inc(nodeIdentity.renewals); } });
    new Counter({ name: 'skein_node_identity_renewal_failures_total', help: 'Failed attempts to renew the node identity (each retried with backoff)', registers: [registry], collect() { this.reset(); this.inc(nodeIdentity.failures); } });
    http.get('/v1/node-identity', async () => nodeIdentity.status());
  }
  if (workload) viewChanged = agent.followWorkload(() => workload.source.view()).changed;
  http.get('/v1/routes', async () => ({ enabled: cfg.peerRoutes, protocol: nativeAddon().ROUTE_PROTOCOL, routes: routes.installed() }));
  if (workload) http.get('/v1/workload', async () => ({ ...workload.source.status(), refusals: workload.server.refusals, x509FirstAnswerMs: workload.server.x509FirstAnswerMs }));
  const [host, port] = cfg.listen.split(':') as [string, string];
  await http.listen({ host, port: Number(port) });

  // Stopping leaves the pinned programs, maps and routes in place: traffic keeps flowing until the next agent
  // adopts them. Only when Skein is being uninstalled (uninstall.ts) does the datapath go with the agent. Every
  // step is bounded: `helm uninstall` removes the mesh etcd too, and the kubelet kills the pod after 5 s.
  const uninstallWatch = watchForUninstall(cfg, log);
  const removeDatapath = (verdict: Verdict) => {
    lb.detach(join(cfg.pinDir, 'links'));
    lb.close();
    rmSync(cfg.pinDir, { recursive: true, force: true });
    removeEmptyParents(cfg.pinDir, BPFFS);
    const routesRemoved = routes.removeAll();
    log.info({ reason: verdict.reason, pinDir: cfg.pinDir, routesRemoved }, 'Skein is being uninstalled: programs detached, pins and peer routes removed');
  };
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    nodeIdentity?.stop();
    const verdict: Verdict = (await uninstallWatch?.verdict(1500)) ?? { uninstall: false, reason: 'no --daemonset: the datapath stays' };
    // The agent stops programming first, so nothing is written back after the removal.
    await waitAtMost(agent.stop(), 1000);
    if (verdict.uninstall) removeDatapath(verdict);
    else log.info({ reason: verdict.reason }, 'stopping: the datapath stays attached for the next agent');
    await waitAtMost(Promise.all([http.close(), workload?.server.close(), workload?.source.stop()]), 1000);
    etcd.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
  await agent.start();
  log.info({ frontends: agent.dump().length }, 'datapath programmed');
}

main().catch((err: Error) => {
  console.error(`skein-agent: ${err.stack ?? err.message}`);
  process.exit(1);
});
