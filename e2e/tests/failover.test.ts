// Issue 5 (agent + datapath): with two meshed clusters, a client's requests to the echo ClusterIP go
// through the BPF socket LB the node agents program: local backends first, the remote cluster's the moment
// none is left, back again when they return; `remote` and `none` affinities; UDP; an agent restart in the
// middle of traffic loses nothing (programs and maps stay pinned, the new agent adopts them); `skein drill`
// measures the same failover through the Kubernetes API only.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { connect } from '../../deploy/cli/connect.js';
import { startAgent } from '../../testbed/agents.js';
import { destroyCgroup } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { distPath } from '../../testbed/repo.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import type { Outcome } from '../../deploy/images/outcome.js';
import { fetchAgentView, fetchStatus, renderNodeView } from '../../deploy/cli/status.js';
import { DrillReport, type DrillFault } from '../../deploy/drill/report.js';
import { DEFAULT_CLIENT_IMAGE, runDrill } from '../../deploy/drill/run.js';
import { clientRequests, clusterKubeconfig, clusterRest, meshEtcd, pods, readyPods, scale, tempStateDir } from './helpers.js';
import { hasDrillRules, observerProblems, reportProblems, testbedFaults } from './drill-helpers.js';
import { podNetnsName } from '../../testbed/topology.js';
import { inNetns } from '../../testbed/netns.js';
import { keys } from '../../mesh/schema/keys.js';
import type { Pod } from '../../mesh/kube/objects.js';

const EAST = 'fo-east';
const WEST = 'fo-west';
const stateDir = tempStateDir('failover');
let east: KubeRest;
let vip = '';
let client = '';

const kubeconfig = (c: string) => clusterKubeconfig(stateDir, c);
const requests = (proto: 'http' | 'udp' | 'tcp', count: number, interval = 0): Promise<Outcome[]> =>
  clientRequests(stateDir, EAST, client, [proto, `${vip}:${proto === 'tcp' ? 9000 : 80}`, '--count', String(count), '--interval-ms', String(interval), '--timeout-ms', '500']);
const clusters = (r: Outcome[]) => [...new Set(r.map((x) => x.cluster ?? 'failed'))].sort();
const echoDeployment = '/apis/apps/v1/namespaces/default/deployments/echo';
const echoReplicas = async () => (await east.get<{ spec: { replicas: number } }>(echoDeployment)).spec.replicas;
const drillRecord = async () => (await east.get<{ metadata: { annotations?: Record<string, string> } }>(echoDeployment)).metadata.annotations?.['skein.io/drill'];
/** `skein drill` as users run it, a child process that can be interrupted. */
const drills = new Set<ChildProcess>();
const drillCli = (extra: string[] = []) => {
  const child = spawn(process.execPath, [distPath('deploy', 'cli', 'skein.js'), 'drill', '--kubeconfig', statePaths(stateDir).kubeconfig, '--context', `skein-${EAST}`, '--service', 'default/echo', '--phase-ms', '30000', ...extra], { stdio: 'ignore' });
  drills.add(child);
  child.on('exit', () => drills.delete(child));
  return child;
};
const setAffinity = (a: string) => east.patch('/api/v1/namespaces/default/services/echo', { metadata: { annotations: { 'skein.io/affinity': a } } });

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 61 }, { name: WEST, id: 62 }], nodes: 2, echo: true });
  await connect(kubeconfig(EAST), kubeconfig(WEST), () => {});
  east = clusterRest(stateDir, EAST);
  vip = (await east.get<{ spec: { clusterIP: string } }>('/api/v1/namespaces/default/services/echo')).spec.clusterIP;
  client = (await readyPods(east, 'app=client', 1))[0]!.metadata!.name!;
});

afterAll(async () => {
  for (const child of drills) child.kill('SIGKILL');
  await down(stateDir);
});

describe('local-first failover through the BPF socket LB', () => {
  it('with local affinity, TCP, HTTP and UDP to the ClusterIP reach only local backends', async () => {
    await waitFor('the agent to program the echo service', async () => (clusters(await requests('http', 1)).join() === EAST ? true : undefined), 30_000);
    for (const proto of ['http', 'tcp', 'udp'] as const) {
      const r = await requests(proto, 10);
      expect(r.every((x) => x.ok)).toBe(true);
      expect(clusters(r)).toEqual([EAST]);
    }
  });

  it('fails over to the remote cluster when no local backend is left, and back when they return', async () => {
    await scale(east, 'echo', 0);
    const over = await waitFor('requests to fail over to west', async () => {
      const r = await requests('http', 3);
      return r.every((x) => x.ok && x.cluster === WEST) ? r : undefined;
    }, 60_000);
    expect(clusters(over)).toEqual([WEST]);
    expect(clusters(await requests('udp', 5))).toEqual([WEST]);
    await scale(east, 'echo', 2);
    await readyPods(east, 'app=echo', 2);
    await waitFor('requests to fail back to east', async () => ((await requests('http', 5)).every((x) => x.ok && x.cluster === EAST) ? true : undefined), 60_000);
  });

  it('remote affinity prefers the remote cluster; none spreads over both', async () => {
    await setAffinity('remote');
    await waitFor('remote affinity', async () => (clusters(await requests('http', 5)).join() === WEST ? true : undefined), 30_000);
    await setAffinity('none');
    await waitFor('both clusters to answer', async () => (clusters(await requests('http', 30)).join() === [EAST, WEST].sort().join() ? true : undefined), 30_000);
    await setAffinity('local');
    await waitFor('local again', async () => (clusters(await requests('http', 5)).join() === EAST ? true : undefined), 30_000);
  });

  it('skein drill measures failover and failback over HTTP and UDP, losing requests only inside its reported window', async () => {
    for (const protocol of ['http', 'udp'] as const) {
      const report = DrillReport.parse(await runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol, intervalMs: 20, requestTimeoutMs: 500, phaseMs: 1000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }));
      const [before, during, after] = report.phases;
      expect(report.cluster).toBe(EAST);
      expect(before!.answeredBy).toEqual({ [EAST]: before!.requests });
      expect(during!.answeredBy[WEST]).toBeGreaterThan(0);
      expect(report.failoverMs).not.toBeNull();
      expect(report.failbackMs).not.toBeNull();
      expect(before!.failed + after!.failed).toBe(0);
      if (report.lossWindow) {
        expect(report.lossWindow.from).toBeGreaterThanOrEqual(report.timeline.takenAt - report.timeline.faultAt);
        expect(report.lossWindow.to).toBeLessThanOrEqual(report.failoverMs!);
      }
      // The last answers all come from east again.
      expect(after!.answeredBy[EAST]).toBeGreaterThan(after!.requests / 2);
      await readyPods(east, 'app=echo', 2);
    }
    expect(await pods(east, 'app.kubernetes.io/name=skein-drill')).toEqual([]);
  });

  it('an interrupted drill (SIGINT, SIGTERM) restores the replicas and removes its pod before it exits', async () => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const child = drillCli();
      await waitFor('the drill to scale echo to 0', async () => ((await echoReplicas()) === 0 ? true : undefined), 60_000);
      child.kill(signal);
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code).toBe(signal === 'SIGINT' ? 130 : 143);
      // Restored before it exited, not later by someone else.
      expect(await echoReplicas()).toBe(2);
      expect(await drillRecord()).toBeUndefined();
      expect((await pods(east, 'app.kubernetes.io/name=skein-drill')).filter((p) => !p.metadata?.deletionTimestamp)).toEqual([]);
      await readyPods(east, 'app=echo', 2);
    }
  });

  it('a drill killed hard is repaired by the next drill, which then runs', async () => {
    const child = drillCli();
    await waitFor('the drill to scale echo to 0', async () => ((await echoReplicas()) === 0 ? true : undefined), 60_000);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    expect(await echoReplicas()).toBe(0);
    expect(JSON.parse((await drillRecord())!)).toMatchObject({ replicas: 2 });
    // While the killed drill's record is fresh, it still counts as a drill in progress.
    const drill = (progress: (m: string) => void) => runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 500, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress });
    await expect(drill(() => {})).rejects.toThrow(/another drill is in progress on default\/deployments\/echo/);
    expect(await echoReplicas()).toBe(0);
    // Once the record expires (the killed drill stopped renewing it), the next drill repairs and runs.
    await new Promise((r) => setTimeout(r, 20_000));
    const said: string[] = [];
    const report = DrillReport.parse(await drill((m) => said.push(m)));
    expect(said).toContain('repairing an interrupted drill: deployments/echo back to 2 replicas');
    expect(report.phases[0]!.answeredBy).toEqual({ [EAST]: report.phases[0]!.requests });
    expect(await echoReplicas()).toBe(2);
    expect(await drillRecord()).toBeUndefined();
    expect((await pods(east, 'app.kubernetes.io/name=skein-drill')).filter((p) => !p.metadata?.deletionTimestamp)).toEqual([]);
    await readyPods(east, 'app=echo', 2);
  });

  it("serves a non-global service's ClusterIP from local backends only; skein status shows each node's datapath", async () => {
    const plain = await east.post<{ spec: { clusterIP: string } }>('/api/v1/namespaces/default/services', { metadata: { name: 'plain' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
    const viaPlain = () => clientRequests(stateDir, EAST, client, ['http', `${plain.spec.clusterIP}:80`, '--count', '10', '--timeout-ms', '500']);
    const r = await waitFor('the non-global service to be programmed', async () => {
      const out = await viaPlain();
      return out.every((x) => x.ok) ? out : undefined;
    }, 30_000);
    expect(clusters(r)).toEqual([EAST]);
    // It is not exported: west never learns of it.
    expect((await fetchStatus(kubeconfig(EAST))).services.map((x) => x.name)).toContain('default/echo');
    expect((await fetchStatus(kubeconfig(EAST))).services.map((x) => x.name)).not.toContain('default/plain');
    const westEtcd = meshEtcd(stateDir, WEST);
    expect(Object.keys(await westEtcd.getAll().prefix(`/skein/v1/cache/${EAST}/services/default/`).strings())).toEqual([`/skein/v1/cache/${EAST}/services/default/echo`]);
    westEtcd.close();
    const status = await waitFor('both agents to publish a view with both services', async () => {
      const s = await fetchStatus(kubeconfig(EAST));
      const views = s.agents.filter((a) => a.programmed[`TCP/${plain.spec.clusterIP}:80`]?.length === 2 && a.programmed[`TCP/${vip}:80`]?.length === 2);
      return views.length === 2 ? s : undefined;
    }, 30_000);
    expect(status.agents.map((a) => a.node).sort()).toEqual([`${EAST}-node-1`, `${EAST}-node-2`]);
    expect(renderNodeView(EAST, await fetchAgentView(kubeconfig(EAST), status, `${EAST}-node-1`))).toContain(`TCP/${vip}:80`);
    await expect(fetchAgentView(kubeconfig(EAST), status, 'nope')).rejects.toThrow(/--node nope: no agent view from that node/);
  });

  it('skein drill refuses what it cannot drill, naming the fix, and changes nothing', async () => {
    const drill = (service: string, protocol: 'http' | 'udp' = 'http') => runDrill({ kc: kubeconfig(EAST), service, protocol, intervalMs: 20, requestTimeoutMs: 500, phaseMs: 500, stepTimeoutMs: 10_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} });
    await expect(drill('default/plain')).rejects.toThrow(/not global: annotate it skein.io\/global="true"/);
    await expect(drill('default/missing')).rejects.toThrow(/--service default\/missing: no such service/);
    await expect(drill('echo')).rejects.toThrow(/expected NAMESPACE\/NAME/);
    await east.patch('/api/v1/namespaces/default/services/plain', { metadata: { annotations: { 'skein.io/global': 'yes' } } });
    await expect(drill('default/plain')).rejects.toThrow(/skein.io\/global: "yes" is not allowed; use "true" or "false"/);
    await east.delete('/api/v1/namespaces/default/services/plain');
    expect((await readyPods(east, 'app=echo', 2)).length).toBe(2);
  });

  it('keeps serving while the node agent is killed and restarted, and the new agent adopts the datapath', async () => {
    const state = readState(stateDir)!;
    const cluster = state.clusters.find((c) => c.name === EAST)!;
    const controlCgroup = join(state.cgroupRoot, 'control', EAST);
    const spec = { tag: state.tag, cluster, clusterDir: statePaths(stateDir).cluster(EAST), logDir: statePaths(stateDir).logs(EAST), controlCgroup, cgroupRoot: state.cgroupRoot, meshEtcdUrl: cluster.meshEtcdUrl };
    const traffic = requests('http', 60, 50); // 3 s of requests, bounded
    await new Promise((r) => setTimeout(r, 500));
    for (const index of [1, 2]) await destroyCgroup(join(controlCgroup, `agent-${index}`));
    await new Promise((r) => setTimeout(r, 500));
    for (const index of [1, 2]) await startAgent({ ...spec, index });
    const r = await traffic;
    expect(r.filter((x) => !x.ok)).toEqual([]);
    expect(clusters(r)).toEqual([EAST]);
    // The restarted agents still follow changes.
    await scale(east, 'echo', 0);
    await waitFor('failover after the restart', async () => ((await requests('http', 3)).every((x) => x.cluster === WEST) ? true : undefined), 60_000);
    await scale(east, 'echo', 2);
    await readyPods(east, 'app=echo', 2);
  });
});

describe('skein drill faults', () => {
  const faultDrill = (fault: DrillFault, target: 'local' | 'remote', protocol: 'tcp' | 'udp' | 'http', onOutcomes?: (o: readonly Outcome[]) => void) =>
    runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol, fault, target, remoteKc: target === 'remote' ? kubeconfig(WEST) : undefined,
      netFaultsFor: testbedFaults(stateDir), intervalMs: 20, requestTimeoutMs: 500, phaseMs: 1000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {}, onOutcomes });

  for (const target of ['local', 'remote'] as const) {
    for (const fault of ['scale', 'kill', 'blackhole'] as const) {
      it(`${fault} of the ${target} backends over TCP and UDP: the reported windows match what the clients saw`, async () => {
        if (target === 'remote') {
          await setAffinity('remote');
          await waitFor('remote affinity', async () => (clusters(await requests('http', 5)).join() === WEST ? true : undefined), 30_000);
        }
        try {
          for (const protocol of ['tcp', 'udp'] as const) {
            let seen: readonly Outcome[] = [];
            const observer = requests(protocol, 400, 25); // an independent stream from the client pod, ~10 s
            const report = DrillReport.parse(await faultDrill(fault, target, protocol, (o) => (seen = o)));
            const observed = await observer;
            expect(report).toMatchObject({ fault, target, protocol, faulted: { cluster: target === 'local' ? EAST : WEST } });
            expect(reportProblems(report, seen)).toEqual([]);
            expect(report.failoverMs).not.toBeNull();
            expect(report.failbackMs).not.toBeNull();
            expect(report.ejectedAfterMs).not.toBeNull();
            if (fault === 'scale') {
              expect(report.requestsLost).toBe(0);
              expect(observed.filter((o) => !o.ok)).toEqual([]);
            } else {
              // How fast is the benchmark's business; here, an independent client's losses all lie inside the
              // window the report claims (fault to the later of failover and ejection). The observer may run on
              // another node than the drill's client, whose agent learns of the fault on its own (its own
              // counters, probes and mesh watch): 100 ms of skew between two nodes' agents is allowed.
              expect(observerProblems(report, observed, Math.max(report.failoverMs ?? 0, report.ejectedAfterMs ?? 0) + 2 * report.intervalMs + 100)).toEqual([]);
            }
            if (fault === 'blackhole') expect(report.faultedStayedReady).toBe(true);
            await readyPods(target === 'local' ? east : clusterRest(stateDir, WEST), 'app=echo', 2);
          }
        } finally {
          if (target === 'remote') await setAffinity('local');
        }
        await waitFor('local again', async () => (clusters(await requests('http', 5)).join() === EAST ? true : undefined), 30_000);
        expect(await pods(east, 'app.kubernetes.io/name=skein-drill')).toEqual([]);
        expect(await drillRecord()).toBeUndefined();
      });
    }
  }

  it('refuses fault drills it cannot run, naming the fix, and changes nothing', async () => {
    await expect(runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', fault: 'blackhole', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 500, stepTimeoutMs: 10_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }))
      .rejects.toThrow("the blackhole fault needs `skein local` (it drops traffic inside pod network namespaces); on a real cluster use a NetworkPolicy or your CNI's tooling");
    await expect(faultDrill('kill', 'remote', 'http')).rejects.toThrow(/affinity local in fo-east.*set skein.io\/affinity to remote \(or none\)/);
    await setAffinity('remote');
    try {
      await expect(faultDrill('kill', 'local', 'http')).rejects.toThrow(/affinity remote.*--target remote --remote-context/);
    } finally {
      await setAffinity('local');
    }
    await expect(runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', target: 'remote', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 500, stepTimeoutMs: 10_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }))
      .rejects.toThrow(/--target remote needs --remote-context/);
    expect(await echoReplicas()).toBe(2);
  });

  it('an interrupted blackhole drill removes its rules before it exits; one killed hard is repaired by the next drill', async () => {
    const echoNetns = async () => (await readyPods(east, 'app=echo', 2)).map((p) => podNetnsName(readState(stateDir)!.tag, p.metadata!.uid!));
    const recordOf = async () => {
      const raw = await drillRecord();
      return raw ? (JSON.parse(raw) as { fault?: string; netns?: string[] }) : undefined;
    };
    for (const signal of ['SIGINT', 'SIGKILL'] as const) {
      const netns = await echoNetns();
      const child = drillCli(['--fault', 'blackhole', '--state-dir', stateDir]);
      // In place in both pods (each namespace's rules are installed on their own) before the drill is stopped.
      const inPlace = async () => (await Promise.all(netns.map((ns) => hasDrillRules(ns)))).every(Boolean);
      await waitFor('the blackhole', async () => ((await recordOf())?.netns?.length === 2 && (await inPlace()) ? true : undefined), 60_000);
      child.kill(signal);
      await new Promise((resolve) => child.on('exit', resolve));
      if (signal === 'SIGINT') {
        for (const ns of netns) expect(await hasDrillRules(ns)).toBe(false);
        expect(await drillRecord()).toBeUndefined();
      } else {
        expect((await recordOf())?.fault).toBe('blackhole');
        for (const ns of netns) expect(await hasDrillRules(ns)).toBe(true);
        await new Promise((r) => setTimeout(r, 20_000));
        const said: string[] = [];
        await runDrill({ kc: kubeconfig(EAST), service: 'default/echo', protocol: 'http', netFaultsFor: testbedFaults(stateDir), intervalMs: 20, requestTimeoutMs: 500, phaseMs: 500, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: (m) => said.push(m) });
        expect(said).toContain('repairing an interrupted drill: removing the blackhole from 2 pod(s) of deployments/echo');
        for (const ns of netns) expect(await hasDrillRules(ns)).toBe(false);
      }
      await readyPods(east, 'app=echo', 2);
    }
  });
});

describe('a silent remote, and spillover', () => {
  it('a remote that goes silent is flagged stale within 2 s and leaves `none` services; it comes back without a relist', async () => {
    await setAffinity('none');
    const etcd = meshEtcd(stateDir, EAST);
    const watch = await etcd.watch().key(keys.syncStatus(WEST)).create();
    try {
      await waitFor('none to spread over both', async () => (clusters(await requests('http', 20)).join() === [EAST, WEST].sort().join() ? true : undefined), 30_000);
      const relists = (await fetchStatus(kubeconfig(EAST))).remotes.find((r) => r.cluster === WEST)!.relists;
      let staleAt: number | undefined;
      let freshAt: number | undefined;
      watch.on('put', (kv) => {
        const v = JSON.parse(kv.value.toString()) as { stale: boolean };
        if (v.stale) staleAt ??= Date.now();
        else if (staleAt) freshAt ??= Date.now();
      });
      // Silence west as east's apiserver sees it: its packets to west's mesh etcd vanish (no reset, no error).
      const state = readState(stateDir)!;
      const port = new URL(state.clusters.find((c) => c.name === WEST)!.meshEtcdUrl).port;
      const apiPod = (await east.get<{ items: Pod[] }>('/api/v1/namespaces/skein-system/pods?labelSelector=app%3Dskein-apiserver')).items.find((p) => !p.metadata?.deletionTimestamp)!;
      const netns = podNetnsName(state.tag, apiPod.metadata!.uid!);
      const rule = ['OUTPUT', '-p', 'tcp', '--dport', port, '-j', 'DROP'];
      const cutAt = Date.now();
      await inNetns(netns, 'iptables', ['-I', ...rule]);
      try {
        await waitFor('east to flag west stale', async () => (staleAt ? true : undefined), 10_000);
        expect(staleAt! - cutAt).toBeLessThanOrEqual(2_500);
        // West's backends leave the active set: every new connection goes to east.
        await waitFor('only east to answer', async () => (clusters(await requests('http', 20)).join() === EAST ? true : undefined), 5_000);
      } finally {
        await inNetns(netns, 'iptables', ['-D', ...rule]);
      }
      await waitFor('east to see west fresh again', async () => (freshAt ? true : undefined), 30_000);
      await waitFor('none to spread over both again', async () => (clusters(await requests('http', 20)).join() === [EAST, WEST].sort().join() ? true : undefined), 10_000);
      expect((await fetchStatus(kubeconfig(EAST))).remotes.find((r) => r.cluster === WEST)!.relists).toBe(relists);
    } finally {
      await watch.cancel().catch(() => {});
      etcd.close();
      await setAffinity('local');
    }
  });

  it('below skein.io/local-min-ready, local and remote serve together; the local share grows with local capacity', async () => {
    const svc = '/api/v1/namespaces/default/services/echo';
    await east.patch(svc, { metadata: { annotations: { 'skein.io/local-min-ready': '4' } } });
    try {
      for (const [replicas, share] of [[1, 0.25], [2, 0.5], [4, 1]] as const) {
        await scale(east, 'echo', replicas);
        await readyPods(east, 'app=echo', replicas);
        const measured = await waitFor(`east's share to settle near ${share}`, async () => {
          const r = await requests('http', 400);
          const s = r.filter((x) => x.ok && x.cluster === EAST).length / r.length;
          return r.every((x) => x.ok) && Math.abs(s - share) <= 0.08 ? s : undefined;
        }, 30_000);
        expect(measured).toBeCloseTo(share, 0);
      }
    } finally {
      await east.patch(svc, { metadata: { annotations: { 'skein.io/local-min-ready': null } } });
      await scale(east, 'echo', 2);
    }
    await readyPods(east, 'app=echo', 2);
    await waitFor('local only again', async () => (clusters(await requests('http', 20)).join() === EAST ? true : undefined), 30_000);
  });
});
