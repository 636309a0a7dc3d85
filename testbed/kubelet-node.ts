// A test-bed node on the real runtime: one containerd (own root, state, socket, runc root), one kubelet and
// one kube-proxy per node network namespace (entered with nsenter --net: the host's mount namespace stays
// shared, so the kubelet's volume mounts are what containerd bind-mounts into containers), pods networked by
// Debian's CNI bridge + host-local plugins on the node's br0 from the node's pod CIDR. The kubelet's cgroup
// root is below the test bed's cgroup in every hierarchy, so `down` (cgroup.kill, then these dirs) finds
// every container. Facts this rests on (checked here): REFERENCE.md, "Real kubelet + containerd".
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnDaemon, waitFor } from './daemon.js';
import { containerdToml, seedContainerdRoot } from './containerd.js';
import { run, runQuiet } from './run.js';
import { clusterPodCidr, type NodeNet } from './topology.js';

/** The test bed's runtime directory on /run (sockets need short paths). */
export const kubeletRunDir = (tag: string) => join('/run/skein', tag);

/** Where one node's runtime lives: sockets and runtime state on /run, images and the kubelet on disk. */
const kubeletNodePaths = (clusterDir: string, tag: string, node: NodeNet) => {
  const run = join(kubeletRunDir(tag), node.name);
  const disk = join(clusterDir, 'nodes', node.name);
  const containerd = { root: join(disk, 'containerd'), state: join(run, 'containerd'), sock: join(run, 'containerd.sock'), opt: join(disk, 'opt'), runcRoot: join(run, 'runc'), cniConfDir: join(disk, 'cni') };
  return {
    run,
    disk,
    containerd,
    containerdSock: containerd.sock,
    containerdConfig: join(disk, 'containerd.toml'),
    kubeletRoot: join(disk, 'kubelet'),
    kubeletConfig: join(disk, 'kubelet.yaml'),
    kubeProxyConfig: join(disk, 'kube-proxy.yaml'),
    cniConfDir: containerd.cniConfDir,
  };
};

/** The kubelet's cgroupRoot (a cgroup path, the same in every hierarchy): below the test bed's own. */
export const kubeletCgroupRoot = (tag: string, nodeName: string) => `/skein/${tag}/kubelet/${nodeName}`;

/** bridge on the node's br0 (already addressed with the gateway), host-local IPAM from the node's /24, default route via br0. */
function cniConflist(node: NodeNet, ipamDir: string): string {
  const [a, b, c] = node.podCidr.split('.');
  return JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: `skein-${node.name}`,
      plugins: [
        {
          type: 'bridge',
          bridge: 'br0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: node.podCidr, rangeStart: `${a}.${b}.${c}.2`, gateway: node.gateway }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

function kubeletYaml(o: { p: ReturnType<typeof kubeletNodePaths>; node: NodeNet; tag: string; caFile: string; logDir: string }): string {
  const { p, node } = o;
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host is cgroup v1 (hybrid): allowed explicitly; cgroupfs (no systemd here), no swap check.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
cgroupRoot: ${kubeletCgroupRoot(o.tag, node.name)}
containerRuntimeEndpoint: unix://${p.containerdSock}
imageServiceEndpoint: unix://${p.containerdSock}
address: ${node.nodeIp}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: ${o.caFile} }
authorization:
  mode: AlwaysAllow
# Pod logs with the test bed's logs: they outlive \`down\`, so a failed \`up\` can be read.
podLogsDir: ${join(o.logDir, `${node.name}-pods`)}
volumePluginDir: ${join(p.disk, 'volume-plugins')}
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Images are imported, never pulled: nothing may collect them, and a full test disk must not evict pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "0%", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%" }
nodeStatusUpdateFrequency: 4s
`;
}

function kubeProxyYaml(o: { kubeconfig: string; node: NodeNet; clusterId: number }): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: ${o.kubeconfig} }
hostnameOverride: ${o.node.name}
clusterCIDR: ${clusterPodCidr(o.clusterId)}
mode: iptables
# Pods of one node share br0 without br_netfilter: masquerading makes replies come back through the node.
iptables: { masqueradeAll: true }
# The conntrack table is the host's: leave its size and timeouts alone.
conntrack: { maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`;
}

/** The v1 hierarchies (cpu, memory, ..., name=systemd) mounted on this host. */
function cgroupV1Mounts(mounts = readFileSync('/proc/self/mounts', 'utf8')): string[] {
  return mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' && f[1])
    .map((f) => f[1]!);
}

/** The kubelet refuses a cgroupRoot missing in any hierarchy; cpuset children start empty, so fill them. */
function ensureV1Cgroup(path: string): void {
  for (const mount of cgroupV1Mounts()) {
    let dir = mount;
    for (const seg of path.split('/').filter(Boolean)) {
      const parent = dir;
      dir = join(dir, seg);
      if (!existsSync(dir)) mkdirSync(dir);
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        if (existsSync(join(dir, f)) && readFileSync(join(dir, f), 'utf8').trim() === '') writeFileSync(join(dir, f), readFileSync(join(parent, f), 'utf8'));
      }
    }
  }
  weighNodes();
}

/** What the kubelet gives its kubepods cgroup on a 2-core machine (cpu.shares = capacity in millicores). */
const NODE_CPU_SHARES = 2048;

/**
 * The v1 cpu weight of the kubelets' cgroups: a node's worth (NODE_CPU_SHARES) each. Left at the default,
 * every pod of every node together weighs as much as ONE host process under load (the cgroup `skein` is
 * one entity next to each control-plane process in the root), and containers start 3-5 times slower.
 */
function weighNodes(): void {
  const cpu = cgroupV1Mounts().find((m) => existsSync(join(m, 'cpu.shares')));
  if (!cpu || !existsSync(join(cpu, 'skein'))) return;
  const nodesOf = (tag: string) => (existsSync(join(cpu, 'skein', tag, 'kubelet')) ? readdirSync(join(cpu, 'skein', tag, 'kubelet'), { withFileTypes: true }).filter((e) => e.isDirectory()).length : 0);
  const tags = readdirSync(join(cpu, 'skein'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  const shares = (dir: string, nodes: number) => nodes > 0 && writeFileSync(join(dir, 'cpu.shares'), String(nodes * NODE_CPU_SHARES));
  for (const tag of tags) {
    shares(join(cpu, 'skein', tag), nodesOf(tag));
    shares(join(cpu, 'skein', tag, 'kubelet'), nodesOf(tag));
  }
  shares(join(cpu, 'skein'), tags.reduce((n, tag) => n + nodesOf(tag), 0));
}

/** What a node's containerd needs: it starts before the control plane is up (imports take the longest). */
export interface NodeRuntimeSpec {
  tag: string;
  clusterDir: string;
  logDir: string;
  /** Control cgroup of the cluster (v2): containerd, kubelet and kube-proxy run below it. */
  controlCgroup: string;
  node: NodeNet;
  /** The image store (image-store.ts) the node's containerd root is copied from. */
  imageStore: string;
  /** The pause image's reference (build.sh's skein-pause), in the store with the others. */
  sandboxImage: string;
}

export interface KubeletSpec extends NodeRuntimeSpec {
  clusterId: number;
  zone: string;
  cluster: string;
  kubeBin: string;
  kubeconfig: string;
  kubeProxyKubeconfig: string;
  caFile: string;
}

const inNodeNetns = (node: NodeNet) => ['nsenter', `--net=/run/netns/${node.netns}`, '--'];

/** The node's containerd with CNI configured and every image of the store; returns once it serves. */
export async function startNodeRuntime(s: NodeRuntimeSpec): Promise<void> {
  const p = kubeletNodePaths(s.clusterDir, s.tag, s.node);
  for (const d of [p.run, p.disk, p.cniConfDir, p.kubeletRoot]) mkdirSync(d, { recursive: true });
  await seedContainerdRoot(s.imageStore, p.containerd.root);
  writeFileSync(p.containerdConfig, containerdToml(p.containerd, s.sandboxImage));
  writeFileSync(join(p.cniConfDir, '10-skein.conflist'), cniConflist(s.node, join(p.disk, 'cni-ipam')));
  const log = join(s.logDir, `${s.node.name}-containerd.log`);
  spawnDaemon({ cgroup: join(s.controlCgroup, `containerd-${s.node.index}`), logFile: log, argv: [...inNodeNetns(s.node), 'containerd', '--config', p.containerdConfig] });
  await waitFor(`containerd of ${s.node.name}`, async () => ((await runQuiet('ctr', ['--address', p.containerdSock, 'version'])) ? true : undefined), 30_000, `see ${log}`);
}

/** The kubelet and kube-proxy of a node whose runtime is up (startNodeRuntime). */
export function startKubelet(s: KubeletSpec): void {
  const p = kubeletNodePaths(s.clusterDir, s.tag, s.node);
  writeFileSync(p.kubeletConfig, kubeletYaml({ p, node: s.node, tag: s.tag, caFile: s.caFile, logDir: s.logDir }));
  writeFileSync(p.kubeProxyConfig, kubeProxyYaml({ kubeconfig: s.kubeProxyKubeconfig, node: s.node, clusterId: s.clusterId }));
  ensureV1Cgroup(kubeletCgroupRoot(s.tag, s.node.name));
  const i = s.node.index;
  spawnDaemon({
    cgroup: join(s.controlCgroup, `kubelet-${i}`),
    logFile: join(s.logDir, `${s.node.name}-kubelet.log`),
    argv: [
      ...inNodeNetns(s.node),
      join(s.kubeBin, 'kubelet'),
      `--config=${p.kubeletConfig}`,
      `--kubeconfig=${s.kubeconfig}`,
      `--root-dir=${p.kubeletRoot}`,
      // Its serving certificate: the default /var/lib/kubelet/pki is one for every kubelet of the host.
      `--cert-dir=${join(p.kubeletRoot, 'pki')}`,
      `--hostname-override=${s.node.name}`,
      `--node-ip=${s.node.nodeIp}`,
      `--node-labels=topology.kubernetes.io/zone=${s.zone},skein.io/cluster=${s.cluster}`,
      '--v=1',
    ],
  });
  spawnDaemon({
    cgroup: join(s.controlCgroup, `kube-proxy-${i}`),
    logFile: join(s.logDir, `${s.node.name}-kube-proxy.log`),
    argv: [...inNodeNetns(s.node), join(s.kubeBin, 'kube-proxy'), `--config=${p.kubeProxyConfig}`, '--v=1'],
  });
}

// ---- teardown (after every process of the test bed is killed) -------------------------------------

/** Unmounts everything mounted below `dirs` (the kubelets' volumes and root bind mounts, containerd's rootfs). */
export async function unmountBelow(dirs: string[]): Promise<string[]> {
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => dirs.some((d) => m === d || m.startsWith(`${d}/`)));
  const unique = [...new Set(mounted)].sort().reverse();
  for (const m of unique) await runQuiet('umount', ['-l', m]);
  return unique;
}

/** Removes the kubelets' cgroups of this test bed from every v1 hierarchy (killing what is left in them). */
export async function destroyV1Cgroups(tag: string): Promise<void> {
  for (const mount of cgroupV1Mounts()) {
    const root = join(mount, 'skein', tag);
    if (!existsSync(root)) continue;
    for (const pid of procsBelow(root)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await waitFor(`the processes of ${root} to exit`, async () => (procsBelow(root).length === 0 ? true : undefined), 10_000);
    removeTree(root);
    try {
      rmdirSync(join(mount, 'skein'));
    } catch {
      /* another state dir's, or busy */
    }
  }
}

function procsBelow(dir: string): number[] {
  const pids = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) pids.push(...procsBelow(join(dir, e.name)));
  return pids;
}

function removeTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  rmdirSync(dir);
}

/** The one path every kubelet uses whatever its --root-dir: its device-plugin socket and checkpoint. */
const DEVICE_PLUGIN_DIR = '/var/lib/kubelet/device-plugins';

/** What the kubelets left in /var/lib/kubelet, once no kubelet runs on this host (else it is that one's). */
export function removeKubeletLeftovers(): void {
  const kubeletRuns = readdirSync('/proc')
    .filter((pid) => /^\d+$/.test(pid))
    .some((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'kubelet';
      } catch {
        return false; // exited meanwhile
      }
    });
  if (kubeletRuns) return;
  for (const f of ['kubelet.sock', 'kubelet_internal_checkpoint']) rmSync(join(DEVICE_PLUGIN_DIR, f), { force: true });
  for (const d of [DEVICE_PLUGIN_DIR, '/var/lib/kubelet']) {
    try {
      rmdirSync(d);
    } catch {
      /* holds something not ours, or absent */
    }
  }
}

/**
 * The pod network namespaces containerd made (/run/netns/cni-*) whose eth0 is paired with a veth in one of
 * this test bed's node namespaces: containerd removes them when it removes a sandbox, `down` kills it first.
 */
export async function destroyPodNetns(tag: string): Promise<string[]> {
  const gone: string[] = [];
  const all = existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith('cni-')) : [];
  for (const ns of all) {
    const links = await run('ip', ['-n', ns, '-o', 'link', 'show']).catch(() => '');
    if (links.includes(`link-netns sk-${tag}-`)) {
      await runQuiet('ip', ['netns', 'delete', ns]);
      gone.push(ns);
    }
  }
  return gone;
}
