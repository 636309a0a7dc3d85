// Issue 13: Skein as users install it, on real parts. Two test-bed clusters whose nodes run the real kubelet
// with containerd and runc (CNI bridge from Debian's plugins); Skein installed in each by `helm install` of
// deploy/helm/skein from the images build.sh made (imported into every node's containerd, never pulled).
// Its pods run from those images; `skein connect` links the clusters; the drill fails over to the other
// cluster and back without losing a request; `helm upgrade` of the agents under traffic loses nothing; a bad
// values file is refused by the chart's schema; an agent renews its node identity (first from a
// CertificateSigningRequest) at half-life and keeps working; `helm uninstall` takes the datapath with it (no
// program attached, no pin, no peer route, no Workload API socket) and the cluster's Services answer through
// kube-proxy.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pod } from '../../mesh/kube/objects.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { connect } from '../../deploy/cli/connect.js';
import { DrillReport } from '../../deploy/drill/report.js';
import { DEFAULT_CLIENT_IMAGE, runDrill } from '../../deploy/drill/run.js';
import { IMAGES } from '../../deploy/version.js';
import { parseOutcome } from '../../deploy/images/outcome.js';
import { waitFor } from '../../testbed/daemon.js';
import { CHART_DIR, helm, SKEIN_NAMESPACE } from '../../testbed/chart.js';
import { cgroup2Root } from '../../testbed/cgroup.js';
import { KUBE_VERSION } from '../../testbed/kube-binaries.js';
import { kubeletCgroupRoot } from '../../testbed/kubelet-node.js';
import { nodeNet } from '../../testbed/topology.js';
import { statePaths } from '../../testbed/state.js';
import { down, exec, up } from '../../testbed/testbed.js';
import { clusterKubeconfig, clusterRest, readyPods, tempStateDir } from './helpers.js';
import { SOCK_LB_PROGRAMS } from '../../datapath/socket-lb.js';

const EAST = 'ck-east';
const WEST = 'ck-west';
const stateDir = tempStateDir('chart-kubelet');
const NODE_IDENTITY_TTL_S = 60;
const kubeconfig = (c: string) => clusterKubeconfig(stateDir, c);
const adminKubeconfig = (c: string) => join(statePaths(stateDir).cluster(c), 'kubeconfigs', 'admin.yaml');

interface Node {
  metadata: { name: string };
  status: { nodeInfo: { kubeletVersion: string; containerRuntimeVersion: string } };
}

const CLUSTERS = [{ name: EAST, id: 71 }, { name: WEST, id: 72 }];
const NODES = 1;
let tag = '';

beforeAll(async () => {
  // Node identities of 60 s: every agent renews its own (over the node CA) about every 30 s throughout, drills included.
  tag = (await up({ stateDir, clusters: CLUSTERS, nodes: NODES, echo: true, kubelet: true, chartApiserverArgs: [`--node-identity-ttl=${NODE_IDENTITY_TTL_S}`] })).tag;
});

afterAll(async () => {
  await down(stateDir);
  if (!tag) return;
  // Nothing of the real-kubelet nodes outlives down: their netns (the pods' too), mounts and cgroups.
  expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(`sk-${tag}-`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  expect(mounts).not.toContain(statePaths(stateDir).dir);
  expect(mounts).not.toContain(`/run/skein/${tag}`);
  expect(existsSync(`/sys/fs/cgroup/memory/skein/${tag}`)).toBe(false);
  // Nor what kubelets write outside their --root-dir (the device-plugin socket's fixed path).
  expect(existsSync('/var/lib/kubelet')).toBe(false);
});

/** What Skein holds on a node: programs attached in its cgroup tree, pins, proto-193 routes, its socket. */
async function onNode(cluster: { name: string; id: number }, index: number) {
  const net = nodeNet(tag, cluster, index);
  const cgroup = join(await cgroup2Root(), kubeletCgroupRoot(tag, net.name));
  const pinDir = `/sys/fs/bpf/skein/${tag}/${cluster.name}/${net.name}`;
  return {
    net,
    programs: () => execFileSync('bpftool', ['cgroup', 'tree', cgroup], { encoding: 'utf8' }).split('\n').filter((l) => /\bskein_/.test(l)),
    pinDir,
    /** The kernel's ID of the pinned services map: the same ID is the same map, contents kept. */
    servicesMapId: () => (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', join(pinDir, 'maps', 'skein_services')], { encoding: 'utf8' })) as { id: number }).id,
    routes: () => execFileSync('ip', ['-n', net.netns, 'route', 'show', 'proto', '193'], { encoding: 'utf8' }).trim(),
    socket: join(statePaths(stateDir).cluster(cluster.name), 'workload', net.name, 'agent.sock'),
  };
}

/** The agent process of a node (host PID namespace: its /proc entry), by its --node-name. */
function agentPid(node: string): number {
  const pid = readdirSync('/proc').find((p) => {
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.endsWith('dist/datapath/agent/main.js')) && argv.includes(`--node-name=${node}`);
    } catch {
      return false; // not a process, or gone
    }
  });
  if (!pid) throw new Error(`no agent process of ${node}`);
  return Number(pid);
}

describe('the Helm chart on real kubelets', () => {
  it('runs skein-apiserver, its mesh etcd and an agent per node as pods from the built images', async () => {
    for (const cluster of [EAST, WEST]) {
      const rest = clusterRest(stateDir, cluster);
      const nodes = (await rest.get<{ items: Node[] }>('/api/v1/nodes')).items;
      expect(nodes.map((n) => n.status.nodeInfo.kubeletVersion)).toEqual([KUBE_VERSION]);
      expect(nodes.every((n) => n.status.nodeInfo.containerRuntimeVersion.startsWith('containerd://'))).toBe(true);
      const pods = (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods`)).items;
      const images = new Set(pods.flatMap((p) => (p.status?.containerStatuses ?? []).map((c) => c.image)));
      expect([...images].sort()).toEqual([IMAGES.etcd.ref, IMAGES.skein.ref].sort());
      for (const p of pods) {
        expect(p.status?.phase, p.metadata?.name).toBe('Running');
        for (const c of p.status?.containerStatuses ?? []) {
          expect(c.ready, `${p.metadata?.name}/${c.name}`).toBe(true);
          expect(c.containerID).toMatch(/^containerd:\/\//);
        }
      }
      expect(pods.filter((p) => p.metadata?.labels?.app === 'skein-agent')).toHaveLength(nodes.length);
      // The echo service's pods too: the demo images, on containerd.
      const echo = await readyPods(rest, 'app=echo', 2);
      expect(echo.map((p) => p.status?.containerStatuses?.[0]?.image)).toEqual([IMAGES.echo.ref, IMAGES.echo.ref]);
    }
  });

  it('skein connect links the two chart installs and each syncs the other', async () => {
    await connect(kubeconfig(EAST), kubeconfig(WEST), () => {});
    for (const [self, peer] of [[EAST, WEST], [WEST, EAST]] as const) {
      const status = await clusterRest(stateDir, self).get<ApiserverStatus>(skeinProxyPath('/v1/status'));
      expect(status.synced).toBe(true);
      expect(status.remotes.find((r) => r.cluster === peer)?.synced).toBe(true);
    }
  });

  it('skein drill fails over to the other cluster and back without losing a request', async () => {
    const report = DrillReport.parse(await runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 1000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }));
    const [before, during, after] = report.phases;
    expect(before!.answeredBy).toEqual({ [EAST]: before!.requests });
    expect(during!.answeredBy[WEST]).toBeGreaterThan(0);
    expect(report.failoverMs).not.toBeNull();
    expect(report.failbackMs).not.toBeNull();
    expect(after!.answeredBy[EAST]).toBeGreaterThan(after!.requests / 2);
    expect(report.requests).toBeGreaterThan(50);
    expect(report.requestsLost).toBe(0);
  });

  it('helm upgrade rolls the agent DaemonSet under traffic without losing a request: the new agent adopts the pinned datapath', async () => {
    const rest = clusterRest(stateDir, EAST);
    const agentUids = async () => (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods?labelSelector=app%3Dskein-agent`)).items.map((p) => p.metadata!.uid!);
    const before = await agentUids();
    const node = await onNode(CLUSTERS[0]!, 1);
    const mapBefore = node.servicesMapId();
    const vip = (await rest.get<{ spec: { clusterIP: string } }>('/api/v1/namespaces/default/services/echo')).spec.clusterIP;
    const client = (await readyPods(rest, 'app=client', 1))[0]!.metadata!.name!;
    // 25 s of requests from a pod (`skein local exec`: kubectl exec through the real kubelet), the upgrade in the middle.
    let trafficDone = false;
    const argv = ['/usr/local/bin/node', '/opt/skein/dist/deploy/images/client.js', 'http', `${vip}:80`, '--count', '1000', '--interval-ms', '25', '--timeout-ms', '500'];
    const traffic = exec({ stateDir, context: EAST, pod: `default/${client}`, argv, stdio: 'pipe' }).finally(() => (trafficDone = true));
    await new Promise((r) => setTimeout(r, 2000));
    await helm(adminKubeconfig(EAST), ['upgrade', 'skein', CHART_DIR, '-n', SKEIN_NAMESPACE, '--reuse-values', '--set', 'agent.resources.requests.cpu=11m', '--wait', '--timeout', '60s']);
    await waitFor('the upgraded agent', async () => {
      const now = await agentUids();
      return now.length === before.length && now.every((u) => !before.includes(u)) ? true : undefined;
    }, 30_000);
    // The rollout finished while requests were still flowing.
    expect(trafficDone).toBe(false);
    const { code, stdout } = await traffic;
    expect(code).toBe(0);
    const outcomes = stdout.split('\n').flatMap((l) => parseOutcome(l) ?? []);
    expect(outcomes).toHaveLength(1000);
    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
    expect(new Set(outcomes.map((o) => o.cluster))).toEqual(new Set([EAST]));
    // The old agent left its datapath (kube-proxy would have answered too): the same maps, all six hooks.
    expect(node.servicesMapId()).toBe(mapBefore);
    expect(node.programs()).toHaveLength(SOCK_LB_PROGRAMS.length);
  });

  it('helm refuses a values file the schema rejects, naming the field, and changes nothing', async () => {
    const bad = join(statePaths(stateDir).dir, 'bad-values.yaml');
    writeFileSync(bad, 'cluster:\n  name: ck-east\n  id: 300\nagent:\n  nodeCgroup: relative/path\n');
    const err = await helm(adminKubeconfig(EAST), ['upgrade', 'skein', CHART_DIR, '-n', SKEIN_NAMESPACE, '--reuse-values', '-f', bad]).then(
      () => '',
      (e: Error) => e.message,
    );
    expect(err).toMatch(/cluster\/id/);
    expect(err).toMatch(/agent\/nodeCgroup/);
    const history = await helm(adminKubeconfig(EAST), ['history', 'skein', '-n', SKEIN_NAMESPACE, '-o', 'json']);
    // install, then the upgrade above: the refused one left no revision.
    expect((JSON.parse(history) as unknown[]).length).toBe(2);
  });

  it('a chart agent renews its node identity (first from a CertificateSigningRequest) at half-life, in its own volume, and keeps working', async () => {
    const rest = clusterRest(stateDir, EAST);
    const agent = (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods?labelSelector=app%3Dskein-agent`)).items[0]!;
    const identity = async () => (await (await fetch(`http://${agent.status!.hostIP}:9877/v1/node-identity`)).json()) as { serial: string; notAfter: string; renewals: number; failures: number };
    const first = await identity();
    expect(Date.parse(first.notAfter) - Date.now()).toBeLessThanOrEqual(NODE_IDENTITY_TTL_S * 1000);
    const renewed = await waitFor('two more renewals', async () => {
      const id = await identity();
      return id.renewals >= first.renewals + 2 ? id : undefined;
    }, 3 * NODE_IDENTITY_TTL_S * 1000);
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.failures).toBe(0);
    // Past the end of the certificate it had before, the same container (never restarted) still serves.
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(first.notAfter) - Date.now() + 1000)));
    const now = await rest.get<Pod>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods/${agent.metadata!.name}`);
    expect(now.status?.containerStatuses?.every((c) => c.ready && c.restartCount === 0)).toBe(true);
    const report = DrillReport.parse(await runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 1000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }));
    expect(report.failoverMs).not.toBeNull();
    expect(report.requestsLost).toBe(0);
  });
});

describe('helm uninstall on real kubelets', () => {
  it('a kill -9 of an agent detaches nothing: the programs stay attached, the restarted agent adopts the same maps', async () => {
    const node = await onNode(CLUSTERS[1]!, 1);
    const mapBefore = node.servicesMapId();
    const rest = clusterRest(stateDir, WEST);
    const agentContainer = async () => (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods?labelSelector=app%3Dskein-agent`)).items[0]?.status?.containerStatuses?.find((c) => c.name === 'agent');
    const restarts = (await agentContainer())?.restartCount ?? 0;
    process.kill(agentPid(node.net.name), 'SIGKILL');
    expect(node.programs()).toHaveLength(SOCK_LB_PROGRAMS.length);
    expect(node.servicesMapId()).toBe(mapBefore);
    await waitFor('the agent restarted and ready', async () => {
      const c = await agentContainer();
      return c && c.restartCount > restarts && c.ready ? true : undefined;
    }, 60_000);
    expect(node.programs()).toHaveLength(SOCK_LB_PROGRAMS.length);
    expect(node.servicesMapId()).toBe(mapBefore);
  });

  it('takes the datapath with it on every node (the upgraded agents\' adopted links too): no program, pin, peer route or socket stays; Services still answer through kube-proxy', async () => {
    const nodes: { cluster: string; node: Awaited<ReturnType<typeof onNode>> }[] = [];
    for (const c of CLUSTERS) for (let i = 1; i <= NODES; i++) nodes.push({ cluster: c.name, node: await onNode(c, i) });
    for (const { cluster, node } of nodes) {
      expect(node.programs().length, cluster).toBe(SOCK_LB_PROGRAMS.length);
      expect(existsSync(join(node.pinDir, 'maps', 'skein_services'))).toBe(true);
      expect(existsSync(node.socket)).toBe(true);
      // A route to a remote cluster's pods as an agent with agent.peerRoutes installs it (datapath/native/routes.cc:
      // protocol and metric 193), via the fabric.
      execFileSync('ip', ['-n', node.net.netns, 'route', 'add', '10.250.9.0/24', 'via', node.net.fabricIp, 'proto', '193', 'metric', '193']);
      expect(node.routes()).toContain('10.250.9.0/24');
    }
    for (const cluster of [EAST, WEST]) {
      await helm(adminKubeconfig(cluster), ['uninstall', 'skein', '-n', SKEIN_NAMESPACE, '--wait', '--timeout', '60s']);
      const rest = clusterRest(stateDir, cluster);
      await waitFor(`the agent pods of ${cluster} to be gone`, async () => ((await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods`)).items.length === 0 ? true : undefined), 60_000);
    }
    for (const { cluster, node } of nodes) {
      expect(node.programs(), cluster).toEqual([]);
      expect(existsSync(node.pinDir), node.pinDir).toBe(false);
      expect(node.routes(), cluster).toBe('');
      expect(existsSync(node.socket), node.socket).toBe(false);
    }
    // Every agent removed its empty parents too: nothing of this test bed is left in bpffs.
    expect(existsSync(`/sys/fs/bpf/skein/${tag}`)).toBe(false);
    // The echo Service by its ClusterIP from a pod: kube-proxy's rules answer now that the socket LB is gone.
    const rest = clusterRest(stateDir, EAST);
    const vip = (await rest.get<{ spec: { clusterIP: string } }>('/api/v1/namespaces/default/services/echo')).spec.clusterIP;
    const client = (await readyPods(rest, 'app=client', 1))[0]!.metadata!.name!;
    const argv = ['/usr/local/bin/node', '/opt/skein/dist/deploy/images/client.js', 'http', `${vip}:80`, '--count', '20', '--interval-ms', '20', '--timeout-ms', '1000'];
    const { code, stdout } = await exec({ stateDir, context: EAST, pod: `default/${client}`, argv, stdio: 'pipe' });
    expect(code).toBe(0);
    const outcomes = stdout.split('\n').flatMap((l) => parseOutcome(l) ?? []);
    expect(outcomes).toHaveLength(20);
    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
  });
});
