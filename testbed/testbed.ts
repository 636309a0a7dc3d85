// `skein local`: kind-like clusters from real parts. up builds what it needs, starts every process inside
// the state dir's cgroup and records what it made; down finds all of it from the state dir alone.
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../mesh/kube/rest.js';
import { cgroup2Root, cgroupPids, destroyCgroup, ensureCgroup } from './cgroup.js';
import { startControlPlane, type ControlPlane } from './control-plane.js';
import { spawnDaemon, waitFor } from './daemon.js';
import { kubeconfigYaml, writeUserKubeconfig } from './kube-pki.js';
import { ensureKubeBinaries, KUBE_VERSION } from './kube-binaries.js';
import { assertRoutesFree, createFabric, createNodeNetwork, destroyNetworks } from './network.js';
import type { NodeRunnerConfig } from './node-runner/config.js';
import { bpffsDir, startAgent, workloadSocket as workloadSocketOf } from './agents.js';
import { applyManifest, loadManifest } from './manifests.js';
import { distPath } from './repo.js';
import { prepareImages, type Images } from './image-store.js';
import { installSkein, startKubelets, startNodeRuntimes } from './kubelet-cluster.js';
import { destroyPodNetns, destroyV1Cgroups, kubeletCgroupRoot, kubeletRunDir, removeKubeletLeftovers, unmountBelow } from './kubelet-node.js';
import { run, runQuiet } from './run.js';
import { deploySkeinApiserver, startMeshEtcd } from './skein-apiserver.js';
import { readState, statePaths, writeState, type ClusterState, type TestbedState } from './state.js';
import { fabricNet, nodeNet, podNetnsName, stateTag } from './topology.js';
import type { Pod } from '../mesh/kube/objects.js';

export interface UpOptions {
  stateDir: string;
  clusters: { name: string; id: number }[];
  nodes: number;
  echo: boolean;
  /** Nodes on the real kubelet + containerd, Skein installed by its Helm chart from the built images. */
  kubelet?: boolean;
  /** More skein-apiserver flags for a --kubelet install (the chart's apiserver.extraArgs), e.g. a short --node-identity-ttl. */
  chartApiserverArgs?: string[];
  progress?: (msg: string) => void;
}

export const contextName = (cluster: string) => `skein-${cluster}`;

function preflight(opts: UpOptions): void {
  if (process.getuid?.() !== 0) throw new Error('skein local needs root (network namespaces, cgroups, BPF): run it with sudo');
  if (opts.clusters.length === 0) throw new Error('--clusters: give at least one NAME:ID, for example east:1,west:2');
  const names = new Set<string>();
  const ids = new Set<number>();
  for (const c of opts.clusters) {
    if (names.has(c.name)) throw new Error(`--clusters: cluster name "${c.name}" is used twice; every cluster needs its own name`);
    if (ids.has(c.id)) throw new Error(`--clusters: cluster ID ${c.id} is used twice; every cluster needs its own ID (1-255)`);
    names.add(c.name);
    ids.add(c.id);
  }
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 16) throw new Error(`--nodes ${opts.nodes}: give 1 to 16 nodes per cluster`);
}

export async function up(opts: UpOptions): Promise<TestbedState> {
  const progress = opts.progress ?? (() => {});
  preflight(opts);
  const paths = statePaths(opts.stateDir);
  const existing = readState(opts.stateDir);
  if (existing) {
    const alive = cgroupPids(existing.cgroupRoot).length > 0;
    if (existing.phase === 'up' && alive) {
      throw new Error(`a local mesh is already up in ${paths.dir} (${existing.clusters.map((c) => c.name).join(', ')}): use it, or run "skein local down --state-dir ${paths.dir}" first`);
    }
    progress(`cleaning up a half-made test bed in ${paths.dir}`);
    await down(opts.stateDir);
  }
  const tag = stateTag(paths.dir);
  const cgroupRoot = join(await cgroup2Root(), 'skein', tag);
  const state: TestbedState = {
    version: 1,
    tag,
    phase: 'starting',
    runtime: opts.kubelet ? 'kubelet' : 'node-runner',
    madeShared: [],
    kubeVersion: KUBE_VERSION,
    cgroupRoot,
    clusters: [],
    createdAt: new Date().toISOString(),
  };
  // Written before anything starts, so `down` can clean up even if this process is killed half way.
  mkdirSync(paths.dir, { recursive: true });
  writeState(opts.stateDir, state);
  try {
    const kubeBin = await ensureKubeBinaries(progress);
    await assertRoutesFree(tag, opts.clusters.map((c) => c.id));
    ensureCgroup(cgroupRoot);
    // Real kubelets: images built and in the image store while the control planes start (they need none).
    const images = opts.kubelet ? prepareImages({ cgroup: join(cgroupRoot, 'control', 'image-store'), runDir: join(kubeletRunDir(tag), 'image-store'), logFile: join(paths.logs('image-store'), 'containerd.log'), progress }) : undefined;
    images?.catch(() => {}); // awaited by every cluster's nodes; a failure surfaces there
    if (opts.kubelet) {
      state.madeShared = await makeShared(['/sys/fs/bpf', await cgroup2Root()]);
      writeState(opts.stateDir, state);
    }
    await createFabric(tag, opts.clusters.map((c) => c.id));
    const planes = await Promise.all(opts.clusters.map((c) => (images ? startKubeletCluster(opts, tag, cgroupRoot, kubeBin, c, images, progress) : startCluster(opts, tag, cgroupRoot, kubeBin, c, progress))));
    state.clusters = planes.map((p) => p.state);
    writeFileSync(paths.kubeconfig, kubeconfigYaml(planes.map((p) => ({ context: contextName(p.state.name), server: p.state.apiserverUrl, caPem: p.plane.ca.certPem, user: p.plane.admin }))), { mode: 0o600 });
    installTools(paths.bin, kubeBin);
    state.phase = 'up';
    writeState(opts.stateDir, state);
    return state;
  } catch (err) {
    progress(`up failed, removing what it made: ${(err as Error).message}`);
    await down(opts.stateDir).catch(() => {});
    throw err;
  }
}

function installTools(binDir: string, kubeBin: string): void {
  mkdirSync(binDir, { recursive: true });
  copyFileSync(join(kubeBin, 'kubectl'), join(binDir, 'kubectl'));
  chmodSync(join(binDir, 'kubectl'), 0o755);
  const client = join(binDir, 'skein-client');
  writeFileSync(client, `#!/bin/sh\nexec "${process.execPath}" "${distPath('deploy', 'images', 'client.js')}" "$@"\n`);
  chmodSync(client, 0o755);
}

/** A cluster's directories emptied for a new start, its control cgroup, and the host address pods reach. */
function freshCluster(opts: UpOptions, tag: string, cgroupRoot: string, cluster: { name: string }, progress: (msg: string) => void) {
  const clusterDir = statePaths(opts.stateDir).cluster(cluster.name);
  const logDir = statePaths(opts.stateDir).logs(cluster.name);
  rmSync(clusterDir, { recursive: true, force: true });
  rmSync(logDir, { recursive: true, force: true });
  progress(`${cluster.name}: starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler`);
  // Pods reach the host at the root end of the fabric link: kube-apiserver and the mesh etcd listen there.
  return { clusterDir, logDir, cg: join(cgroupRoot, 'control', cluster.name), hostIp: fabricNet(tag).rootIp };
}

async function startCluster(
  opts: UpOptions,
  tag: string,
  cgroupRoot: string,
  kubeBin: string,
  cluster: { name: string; id: number },
  progress: (msg: string) => void,
): Promise<{ state: ClusterState; plane: ControlPlane }> {
  const { clusterDir, logDir, cg, hostIp } = freshCluster(opts, tag, cgroupRoot, cluster, progress);
  const plane = await startControlPlane({ cluster: cluster.name, clusterDir, cgroup: cg, kubeBin, logDir, bindIp: hostIp });
  const adminKubeconfig = join(clusterDir, 'kubeconfigs', 'admin.yaml');
  const mesh = await startMeshEtcd({ cluster: cluster.name, clusterDir, logDir, cgroup: join(cg, 'mesh-etcd'), hostIp, adminKubeconfig });

  progress(`${cluster.name}: starting ${opts.nodes} node(s)`);
  for (let i = 1; i <= opts.nodes; i++) {
    const node = nodeNet(tag, cluster, i);
    await createNodeNetwork(tag, node);
    const kubeconfig = join(clusterDir, 'kubeconfigs', `${node.name}.yaml`);
    await writeUserKubeconfig(plane.ca, plane.apiserverUrl, { name: node.name, commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }, kubeconfig);
    const cfg: NodeRunnerConfig = {
      tag,
      cluster: cluster.name,
      clusterId: cluster.id,
      zone: `${cluster.name}-${i % 2 === 1 ? 'a' : 'b'}`,
      kubeconfig,
      cgroup: ensureCgroup(join(cgroupRoot, node.cgroup)),
      logDir: join(logDir, 'pods'),
      podsDir: join(clusterDir, 'pods'),
      caFile: plane.pki.caCert,
      apiserver: { host: hostIp, port: Number(new URL(plane.apiserverUrl).port) },
      kubeletApi: { host: hostIp, certFile: plane.pki.kubeletCert, keyFile: plane.pki.kubeletKey },
      node,
    };
    mkdirSync(cfg.logDir, { recursive: true });
    const cfgFile = join(clusterDir, `${node.name}.json`);
    writeFileSync(cfgFile, JSON.stringify(cfg, null, 2));
    spawnDaemon({ cgroup: join(cg, `runner-${i}`), logFile: join(logDir, `${node.name}.log`), argv: [process.execPath, distPath('testbed', 'node-runner', 'main.js'), cfgFile] });
  }
  const kc = new KubeConfig();
  kc.loadFromFile(adminKubeconfig);
  const rest = new KubeRest(kc);
  await waitFor(
    `${opts.nodes} node(s) of ${cluster.name} to register`,
    async () => ((await rest.get<{ items: unknown[] }>('/api/v1/nodes')).items.length >= opts.nodes ? true : undefined),
    60_000,
    `see ${logDir}`,
  );
  progress(`${cluster.name}: deploying skein-apiserver`);
  await deploySkeinApiserver({ cluster, adminKubeconfig, meshEtcdUrl: mesh.clientUrl, logHint: `see ${logDir}` });
  progress(`${cluster.name}: starting ${opts.nodes} skein-agent(s)`);
  const agents: string[] = [];
  for (let i = 1; i <= opts.nodes; i++) agents.push(await startAgent({ tag, cluster, index: i, clusterDir, logDir, controlCgroup: cg, cgroupRoot, meshEtcdUrl: mesh.clientUrl }));
  if (opts.echo) await deployEcho(kc, cluster.name, logDir, progress);
  return {
    plane,
    state: { name: cluster.name, id: cluster.id, nodes: opts.nodes, apiserverUrl: plane.apiserverUrl, kubeEtcdUrl: plane.kubeEtcdUrl, meshEtcdUrl: mesh.clientUrl, agents },
  };
}

/**
 * containerd refuses a HostToContainer volume (the agent's bpffs and cgroup2) from a private mount; hosts with
 * systemd have every mount shared. Returns what it changed, so `down` puts it back.
 */
async function makeShared(targets: string[]): Promise<string[]> {
  const changed: string[] = [];
  for (const t of targets) {
    const prop = (await run('findmnt', ['-n', '-o', 'PROPAGATION', '--mountpoint', t])).trim();
    if (prop === 'private') {
      await run('mount', ['--make-shared', t]);
      changed.push(t);
    }
  }
  return changed;
}

async function startKubeletCluster(
  opts: UpOptions,
  tag: string,
  cgroupRoot: string,
  kubeBin: string,
  cluster: { name: string; id: number },
  images: Promise<Images>,
  progress: (msg: string) => void,
): Promise<{ state: ClusterState; plane: ControlPlane }> {
  const { clusterDir, logDir, cg, hostIp } = freshCluster(opts, tag, cgroupRoot, cluster, progress);
  const nodes = Array.from({ length: opts.nodes }, (_, i) => nodeNet(tag, cluster, i + 1));
  const spec = { tag, cluster, nodes, clusterDir, logDir, controlCgroup: cg, kubeBin, cgroup2Mount: await cgroup2Root(), apiserverArgs: opts.chartApiserverArgs ?? [], progress };
  // containerd and its images need no control plane: both start at once.
  const [plane, built] = await Promise.all([startControlPlane({ cluster: cluster.name, clusterDir, cgroup: cg, kubeBin, logDir, bindIp: hostIp, realKubelets: true, progress }), startNodeRuntimes(spec, images)]);
  progress(`${cluster.name}: control plane and node runtimes up`);
  const admin = new KubeConfig();
  admin.loadFromFile(join(clusterDir, 'kubeconfigs', 'admin.yaml'));
  await startKubelets(spec, built, plane, admin);
  // The demo needs nothing of Skein to start: its pods start beside the chart's.
  const [skein] = await Promise.all([installSkein(spec, admin).then((r) => (progress(`${cluster.name}: skein-apiserver and agents ready`), r)), opts.echo && deployEcho(admin, cluster.name, logDir, progress)]);
  return {
    plane,
    state: { name: cluster.name, id: cluster.id, nodes: opts.nodes, apiserverUrl: plane.apiserverUrl, kubeEtcdUrl: plane.kubeEtcdUrl, meshEtcdUrl: skein.meshEtcdUrl, agents: skein.agents },
  };
}

async function deployEcho(kc: KubeConfig, cluster: string, logDir: string, progress: (msg: string) => void): Promise<void> {
  const rest = new KubeRest(kc);
  progress(`${cluster}: deploying the global echo service`);
  await waitFor('the default service account', async () => ((await rest.get('/api/v1/namespaces/default/serviceaccounts/default')) ? true : undefined), 60_000);
  await applyManifest(kc, loadManifest('echo.yaml', { CLUSTER_NAME: cluster }));
  await waitFor(
    `default/echo in ${cluster} to have 2 ready replicas`,
    async () => ((await rest.get<{ status?: { readyReplicas?: number } }>('/apis/apps/v1/namespaces/default/deployments/echo')).status?.readyReplicas === 2 ? true : undefined),
    120_000,
    `see ${logDir}`,
  );
  progress(`${cluster}: echo ready`);
}

function rmdirIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* still used by another state dir, or already gone */
  }
}

/** Removes every process, namespace, cgroup and pin of this state dir; safe to run any number of times. */
export async function down(stateDir: string): Promise<{ netns: string[]; hadProcesses: boolean }> {
  const paths = statePaths(stateDir);
  const tag = stateTag(paths.dir);
  let state: TestbedState | undefined;
  try {
    state = readState(stateDir);
  } catch {
    /* unreadable: clean up by the tag alone */
  }
  const cgroupRoot = state?.cgroupRoot ?? join(await cgroup2Root(), 'skein', tag);
  const hadProcesses = cgroupPids(cgroupRoot).length > 0;
  await destroyCgroup(cgroupRoot);
  // Real-kubelet nodes (looked for whatever the state says, a crash may have left no state): their
  // containers' v1 cgroups, the mounts of kubelets and containerds, the pod namespaces containerd made.
  await destroyV1Cgroups(tag);
  await unmountBelow([join(paths.dir, 'clusters'), kubeletRunDir(tag)]);
  rmSync(kubeletRunDir(tag), { recursive: true, force: true });
  rmdirIfEmpty('/run/skein');
  await destroyPodNetns(tag);
  for (const m of state?.madeShared ?? []) await runQuiet('mount', ['--make-private', m]);
  if (state?.runtime === 'kubelet') removeKubeletLeftovers();
  const netns = await destroyNetworks(tag);
  rmSync(bpffsDir(tag), { recursive: true, force: true });
  rmdirIfEmpty(join(cgroupRoot, '..'));
  for (const p of [paths.stateFile, paths.kubeconfig, paths.bin, join(paths.dir, 'clusters')]) rmSync(p, { recursive: true, force: true });
  return { netns, hadProcesses };
}

export interface ExecOptions {
  stateDir: string;
  context: string;
  pod: string;
  argv: string[];
  stdio?: 'inherit' | 'pipe';
}

/** Where a pod runs: its netns and its node's cgroup (the test bed's `kubectl exec`). */
export async function locatePod(stateDir: string, context: string, podRef: string): Promise<{ netns: string; cgroup: string; pod: Pod; workloadSocket: string }> {
  const state = readState(stateDir);
  if (!state || state.phase !== 'up') throw new Error(`no local mesh is up in ${statePaths(stateDir).dir}: run "skein local up" first`);
  const cluster = state.clusters.find((c) => contextName(c.name) === context || c.name === context);
  if (!cluster) throw new Error(`--context ${context}: not a cluster of this test bed (have ${state.clusters.map((c) => contextName(c.name)).join(', ')})`);
  const [ns, name] = podRef.includes('/') ? podRef.split('/', 2) : ['default', podRef];
  const kc = new KubeConfig();
  kc.loadFromFile(join(statePaths(stateDir).cluster(cluster.name), 'kubeconfigs', 'admin.yaml'));
  const pod = await new KubeRest(kc).get<Pod>(`/api/v1/namespaces/${ns}/pods/${name}`);
  const nodeIndex = Number(/-node-(\d+)$/.exec(pod.spec?.nodeName ?? '')?.[1]);
  if (!pod.metadata?.uid || !nodeIndex || pod.status?.phase !== 'Running') throw new Error(`pod ${ns}/${name} in ${cluster.name} is not running on a node yet (phase ${pod.status?.phase ?? 'unknown'})`);
  const node = nodeNet(state.tag, cluster, nodeIndex);
  return {
    netns: podNetnsName(state.tag, pod.metadata.uid),
    cgroup: join(state.cgroupRoot, node.cgroup, `pod-${pod.metadata.uid}`, 'exec'),
    pod,
    workloadSocket: workloadSocketOf(statePaths(stateDir).cluster(cluster.name), nodeIndex),
  };
}

/** The drill's client in a pod: on PATH (node runner), or in the skein-client image (real kubelets). */
export const CLIENT_IN_IMAGE = ['node', '/opt/skein/dist/deploy/images/client.js'];
export const clientCommand = (stateDir: string): string[] => (readState(stateDir)?.runtime === 'kubelet' ? CLIENT_IN_IMAGE : ['skein-client']);

/**
 * Real kubelets: the cgroup v2 of one container of a pod (kubepods/<qos>/pod<uid>/<container id> below its
 * kubelet's cgroup root), where `cgroup.freeze` pauses it and `cgroup.kill` ends it as a crash would.
 */
export async function containerCgroup(stateDir: string, context: string, podRef: string, container: string): Promise<string> {
  const state = readState(stateDir);
  if (state?.runtime !== 'kubelet') throw new Error(`containerCgroup: ${statePaths(stateDir).dir} does not run real kubelets`);
  const { pod } = await locatePod(stateDir, context, podRef);
  const id = pod.status?.containerStatuses?.find((c) => c.name === container)?.containerID?.replace(/^containerd:\/\//, '');
  if (!id) throw new Error(`pod ${podRef} has no running container "${container}"`);
  const found = findDir(join(await cgroup2Root(), kubeletCgroupRoot(state.tag, pod.spec!.nodeName!), 'kubepods'), id, 3);
  if (!found) throw new Error(`no cgroup of container ${container} (${id}) of ${podRef}`);
  return found;
}

function findDir(dir: string, name: string, depth: number): string | undefined {
  if (!existsSync(dir)) return undefined;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    if (e.name === name) return join(dir, name);
    const below = depth > 1 ? findDir(join(dir, e.name), name, depth - 1) : undefined;
    if (below) return below;
  }
  return undefined;
}

export async function exec(opts: ExecOptions): Promise<{ code: number; stdout: string }> {
  if (readState(opts.stateDir)?.runtime === 'kubelet') return kubectlExec(opts);
  const { netns, cgroup, workloadSocket } = await locatePod(opts.stateDir, opts.context, opts.pod);
  if (!existsSync(`/run/netns/${netns}`)) throw new Error(`pod ${opts.pod} has no sandbox on this machine (netns ${netns} is missing)`);
  ensureCgroup(cgroup);
  const bin = statePaths(opts.stateDir).bin;
  return spawnCollect('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(cgroup, 'cgroup.procs'), 'ip', 'netns', 'exec', netns, ...opts.argv], opts.stdio, {
    // As a pod spec with the Workload API socket mounted would: the socket of the pod's node.
    ...process.env,
    PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    SPIFFE_ENDPOINT_SOCKET: `unix://${workloadSocket}`,
  });
}

/** Real-kubelet nodes: `kubectl exec` into the pod's container (argv runs in the container's image). */
function kubectlExec(opts: ExecOptions): Promise<{ code: number; stdout: string }> {
  const paths = statePaths(opts.stateDir);
  const [ns, name] = opts.pod.includes('/') ? opts.pod.split('/', 2) : ['default', opts.pod];
  const context = opts.context.startsWith('skein-') ? opts.context : contextName(opts.context);
  return spawnCollect(join(paths.bin, 'kubectl'), ['--kubeconfig', paths.kubeconfig, '--context', context, 'exec', '-n', ns!, name!, '--', ...opts.argv], opts.stdio);
}

function spawnCollect(cmd: string, args: string[], stdio: ExecOptions['stdio'], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: stdio === 'pipe' ? ['ignore', 'pipe', 'inherit'] : 'inherit', env });
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout }));
    child.on('error', reject);
  });
}
