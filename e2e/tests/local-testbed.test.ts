// Issue 2: the local test bed brings up real clusters whose real controllers drive pods the node runners
// run, pods reach each other across clusters, and down leaves nothing behind, also after a killed up.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroupPids } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { listNetns } from '../../testbed/netns.js';
import { distPath } from '../../testbed/repo.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { podNetnsName, stateTag } from '../../testbed/topology.js';
import { clientRequests, clusterRest, pods, readyPods, scale, tempStateDir } from './helpers.js';

async function leftovers(stateDir: string, cgroupRoot: string) {
  const tag = stateTag(stateDir);
  return {
    netns: (await listNetns()).filter((n) => n.startsWith(`sk-${tag}-`)),
    cgroup: existsSync(cgroupRoot),
    processes: cgroupPids(cgroupRoot).length,
    bpffs: existsSync(`/sys/fs/bpf/skein/${tag}`),
  };
}

describe('skein local: two clusters', () => {
  const stateDir = tempStateDir('testbed');
  let cgroupRoot = '';

  beforeAll(async () => {
    const state = await up({ stateDir, clusters: [{ name: 'tb-east', id: 21 }, { name: 'tb-west', id: 22 }], nodes: 2, echo: true });
    cgroupRoot = state.cgroupRoot;
  });

  afterAll(async () => {
    await down(stateDir);
    expect(await leftovers(stateDir, cgroupRoot)).toEqual({ netns: [], cgroup: false, processes: 0, bpffs: false });
  });

  it('writes one kubeconfig context per cluster and a kubectl of the pinned release', () => {
    const kubeconfig = readFileSync(statePaths(stateDir).kubeconfig, 'utf8');
    expect(kubeconfig).toContain('name: skein-tb-east');
    expect(kubeconfig).toContain('name: skein-tb-west');
    expect(existsSync(join(statePaths(stateDir).bin, 'kubectl'))).toBe(true);
  });

  it('refuses a second up on the same state dir with a clear message', async () => {
    await expect(up({ stateDir, clusters: [{ name: 'tb-east', id: 21 }], nodes: 1, echo: false })).rejects.toThrow(/already up in .*run "skein local down/);
  });

  it('runs Deployment pods created by the real controllers as processes in their own netns and cgroup', async () => {
    const state = readState(stateDir)!;
    for (const cluster of ['tb-east', 'tb-west']) {
      const echo = await readyPods(clusterRest(stateDir, cluster), 'app=echo', 2);
      expect(new Set(echo.map((p) => p.spec?.nodeName)).size).toBeGreaterThanOrEqual(1);
      for (const p of echo) {
        expect(p.metadata?.ownerReferences?.[0]?.kind).toBe('ReplicaSet');
        expect(p.status?.podIP).toMatch(cluster === 'tb-east' ? /^10\.21\.\d+\.\d+$/ : /^10\.22\.\d+\.\d+$/);
        expect(existsSync(`/run/netns/${podNetnsName(state.tag, p.metadata!.uid!)}`)).toBe(true);
        const idx = /-node-(\d+)$/.exec(p.spec!.nodeName!)![1];
        expect(cgroupPids(join(state.cgroupRoot, 'nodes', cluster, idx!, `pod-${p.metadata!.uid}`)).length).toBeGreaterThan(0);
      }
    }
  });

  it('carries TCP, HTTP and UDP from a pod in one cluster to a pod in the other', async () => {
    const [client] = await readyPods(clusterRest(stateDir, 'tb-east'), 'app=client', 1);
    const west = await readyPods(clusterRest(stateDir, 'tb-west'), 'app=echo', 2);
    const target = west[0]!;
    for (const [proto, port] of [['http', 8080], ['udp', 8080], ['tcp', 9000]] as const) {
      const res = await clientRequests(stateDir, 'tb-east', client!.metadata!.name!, [proto, `${target.status!.podIP}:${port}`, '--count', '3']);
      expect(res).toHaveLength(3);
      for (const r of res) expect(r).toMatchObject({ ok: true, cluster: 'tb-west', pod: target.metadata!.name });
    }
  });

  it('scaling to zero stops the processes, removes the sandboxes and empties the EndpointSlices', async () => {
    const rest = clusterRest(stateDir, 'tb-west');
    const state = readState(stateDir)!;
    const before = await readyPods(rest, 'app=echo', 2);
    await scale(rest, 'echo', 0);
    await waitFor(
      'echo pods to be deleted',
      async () => ((await pods(rest, 'app=echo')).length === 0 ? true : undefined),
      60_000,
    );
    // The EndpointSlice controller follows pod deletion asynchronously.
    const endpoints = async () =>
      (await rest.get<{ items: { endpoints?: unknown[] | null }[] }>('/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Decho')).items.flatMap((s) => s.endpoints ?? []);
    await waitFor('the echo EndpointSlices to empty', async () => ((await endpoints()).length === 0 ? true : undefined), 30_000);
    expect(await endpoints()).toEqual([]);
    for (const p of before) {
      const idx = /-node-(\d+)$/.exec(p.spec!.nodeName!)![1];
      expect(existsSync(join(state.cgroupRoot, 'nodes', 'tb-west', idx!, `pod-${p.metadata!.uid}`))).toBe(false);
      expect(existsSync(`/run/netns/${podNetnsName(state.tag, p.metadata!.uid!)}`)).toBe(false);
    }
    await scale(rest, 'echo', 2);
    await readyPods(rest, 'app=echo', 2);
  });
});

describe('skein local down after a killed up', () => {
  it('removes every process, netns and cgroup even though up never finished', async () => {
    const stateDir = tempStateDir('killed');
    const child = spawn(process.execPath, [distPath('deploy', 'cli', 'skein.js'), 'local', 'up', '--state-dir', stateDir, '--clusters', 'tb-kill:23', '--nodes', '2'], { stdio: 'ignore' });
    // Kill it once nodes exist: control plane, mesh etcd and node runners are running by then.
    const state = await waitFor(
      'up to start node runners',
      async () => {
        const s = readState(stateDir);
        const ns = await listNetns();
        return s && ns.some((n) => n.startsWith(`sk-${s.tag}-tb-kill-n`)) ? s : undefined;
      },
      120_000,
    );
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(cgroupPids(state.cgroupRoot).length).toBeGreaterThan(0);
    await down(stateDir);
    expect(await leftovers(stateDir, state.cgroupRoot)).toEqual({ netns: [], cgroup: false, processes: 0, bpffs: false });
    expect(existsSync(statePaths(stateDir).stateFile)).toBe(false);
  });
});
