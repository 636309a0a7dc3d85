// Issue #12's fault matrix on two connected clusters: each fault either works or is refused with a visible
// reason, and afterwards the mesh converges (every cache equals the export it copies) with nothing lost.
// East is the importer under test; west is the peer that misbehaves, through what it really has (its own
// mesh etcd root, its Kubernetes API). Interrupted drills are proven in failover.test.ts, where the drill's
// service and client live.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../deploy/cli/connect.js';
import { listPrefix } from '../../mesh/etcd.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { cachePrefix, exportPrefix, keys } from '../../mesh/schema/keys.js';
import { ClusterConfig, GlobalService, MeshNode } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus, RemoteStatus } from '../../mesh/status.js';
import type { RejectReason } from '../../mesh/address-policy.js';
import { waitFor } from '../../testbed/daemon.js';
import { inNetns } from '../../testbed/netns.js';
import { bpffsDir } from '../../testbed/agents.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { podNetnsName } from '../../testbed/topology.js';
import { addApiserverArgs, clientRequests, clusterKubeconfig, clusterRest, containerLog, meshEtcd, readyPods, scale, tempStateDir } from './helpers.js';

const EAST = 'fm-east';
const WEST = 'fm-west';
const stateDir = tempStateDir('fault-matrix');
let east: KubeRest;
let west: KubeRest;
let eastEtcd: Etcd3;
let westEtcd: Etcd3;

const APISERVER = '/apis/apps/v1/namespaces/skein-system/deployments/skein-apiserver';
const STALE_AFTER_S = 8;
const REMOVE_AFTER_S = 20;

const status = (rest: KubeRest) => rest.get<ApiserverStatus>(skeinProxyPath('/v1/status'));
const westSeenByEast = async (): Promise<RemoteStatus | undefined> => (await status(east)).remotes.find((r) => r.cluster === WEST);
const rejectedFor = async (reason: RejectReason) => (await westSeenByEast())?.rejectedByReason[reason] ?? 0;

/** A valid global service of west's, `backends` of them on one pod IP inside west's pin (ports differ), as west's root writes it. */
function westService(name: string, podIp: string, backends: number): string {
  return JSON.stringify({
    cluster: WEST, namespace: 'default', name, shared: true, affinity: 'none', clusterIps: [],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    backends: Array.from({ length: backends }, (_, i) => ({ ip: podIp, ports: { http: { port: 1024 + i, protocol: 'TCP' } }, ready: true, serving: true, terminating: false })),
  });
}

/** Restarts east's skein-apiserver: its sync of west starts with a full relist. */
async function restartEastApiserver(): Promise<void> {
  const old = (await apiserverPod(east))!;
  await east.delete(`/api/v1/namespaces/skein-system/pods/${old.metadata!.name}`, { gracePeriodSeconds: 0 });
  await waitFor('east apiserver to be ready again', async () => {
    const p = await apiserverPod(east);
    return p && p.metadata!.uid !== old.metadata!.uid && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? true : undefined;
  }, 90_000);
}

/**
 * The export and the other side's cache of it, heartbeat aside (it moves every few seconds), and the trust
 * bundle aside (a peer's bundle is checked and published for the agents, never cached).
 */
async function exportAndCache(exporter: Etcd3, exporterName: string, viewer: Etcd3) {
  const strip = (all: Record<string, string>, prefix: string) =>
    Object.fromEntries(Object.entries(all).map(([k, v]): [string, string] => [k.slice(prefix.length), v]).filter(([k]) => k !== 'heartbeat' && k !== 'bundle'));
  // Paged like the sync reads (the size test makes either side larger than one gRPC message).
  const all = async (etcd: Etcd3, prefix: string) => Object.fromEntries((await listPrefix(etcd, prefix)).kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
  const [exp, cache] = await Promise.all([all(exporter, exportPrefix(exporterName)), all(viewer, cachePrefix(exporterName))]);
  return { exported: strip(exp, exportPrefix(exporterName)), cached: strip(cache, cachePrefix(exporterName)) };
}

/**
 * Converged: each cluster's cache of the other equals the other's export (read in one snapshot each), but
 * for west's keys east refuses (`refused`, paths after the prefix), which must be absent from east's cache.
 */
async function converged(refused: string[] = []): Promise<void> {
  for (const [exporter, name, viewer] of [[westEtcd, WEST, eastEtcd], [eastEtcd, EAST, westEtcd]] as const) {
    const snap = await waitFor(`${name}'s export to equal its copy on the other side`, async () => {
      const s = await exportAndCache(exporter, name, viewer);
      if (name === WEST) for (const k of refused) delete s.exported[k];
      return JSON.stringify(s.exported) === JSON.stringify(s.cached) ? s : undefined;
    }, 60_000);
    expect(snap.cached).toEqual(snap.exported);
    expect(Object.keys(snap.cached).length).toBeGreaterThan(3);
  }
}

const apiserverPod = async (rest: KubeRest) => {
  const items = (await rest.get<{ items: V1Pod[] }>('/api/v1/namespaces/skein-system/pods?labelSelector=app%3Dskein-apiserver')).items.filter((p) => !p.metadata?.deletionTimestamp);
  return items.length === 1 ? items[0] : undefined;
};

async function scaleApiserver(rest: KubeRest, replicas: number): Promise<void> {
  await rest.patch(`${APISERVER}/scale`, { spec: { replicas } });
  if (replicas > 0) await waitFor('skein-apiserver to serve its status again', async () => ((await status(rest)).synced ? true : undefined), 90_000);
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 81 }, { name: WEST, id: 82 }], nodes: 1, echo: true });
  east = clusterRest(stateDir, EAST);
  west = clusterRest(stateDir, WEST);
  eastEtcd = meshEtcd(stateDir, EAST);
  westEtcd = meshEtcd(stateDir, WEST);
  // Short grace periods, and mesh etcd maintenance every 10 s (defragmenting once 1 MiB is free).
  await addApiserverArgs(east, [`--remote-stale-after=${STALE_AFTER_S}`, `--remote-remove-after=${REMOVE_AFTER_S}`, '--mesh-compaction-interval=10', '--mesh-defrag-min-free=1Mi']);
  await waitFor('east restarted with the test grace periods', async () => {
    const pod = await apiserverPod(east);
    return pod?.spec?.containers[0]?.args?.includes(`--remote-remove-after=${REMOVE_AFTER_S}`) && pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? true : undefined;
  }, 90_000);
});

afterAll(async () => {
  eastEtcd?.close();
  westEtcd?.close();
  await down(stateDir);
});

describe('faults while connecting and syncing', () => {
  it('a sync step failing (the local mesh etcd unreachable while a peer connects) is retried until the link works, without a restart', async () => {
    // Cut east's skein-apiserver from its own mesh etcd at the socket: every etcd step of the new link fails.
    const state = readState(stateDir)!;
    const port = new URL(state.clusters.find((c) => c.name === EAST)!.meshEtcdUrl).port;
    const pod = (await apiserverPod(east))!;
    const restarts = pod.status?.containerStatuses?.[0]?.restartCount ?? 0;
    const netns = podNetnsName(state.tag, pod.metadata!.uid!);
    const rule = ['OUTPUT', '-p', 'tcp', '--dport', port, '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await inNetns(netns, 'iptables', ['-I', ...rule]);
    let cut = true;
    try {
      const linking = connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {}, 120_000);
      await waitFor('east to fail a sync step', async () => (/sync manager change failed, retrying|remote sync failed/.test(containerLog(stateDir, EAST, `skein-system_${pod.metadata!.name}_`)) ? true : undefined), 60_000);
      await inNetns(netns, 'iptables', ['-D', ...rule]);
      cut = false;
      await linking;
    } finally {
      if (cut) await inNetns(netns, 'iptables', ['-D', ...rule]).catch(() => {});
    }
    await converged();
    const after = (await apiserverPod(east))!;
    expect(after.metadata!.uid).toBe(pod.metadata!.uid);
    expect(after.status?.containerStatuses?.[0]?.restartCount ?? 0).toBe(restarts);
  });
});

describe('time', () => {
  /** Writes west's heartbeat as west's own root would, with west's clock `skewMs` off, every second until stopped. */
  function skewedHeartbeats(skewMs: number): () => Promise<void> {
    let stopped = false;
    const loop = (async () => {
      for (let i = 0; !stopped && i < 120; i++) {
        await westEtcd.put(keys.heartbeat(WEST)).value(JSON.stringify({ cluster: WEST, at: new Date(Date.now() + skewMs).toISOString() }));
        await new Promise((r) => setTimeout(r, 1_000));
      }
    })();
    return async () => {
      stopped = true;
      await loop;
    };
  }

  it('a peer whose clock is an hour ahead or behind is judged by when its heartbeats arrive', async () => {
    await scaleApiserver(west, 0);
    try {
      // An hour ahead: fresh while heartbeats arrive, stale soon after they stop (not an hour later).
      let stop = skewedHeartbeats(3600_000);
      await new Promise((r) => setTimeout(r, (STALE_AFTER_S + 4) * 1000));
      const ahead = await westSeenByEast();
      expect(ahead?.stale).toBe(false);
      expect(Date.parse(ahead!.lastHeartbeat!)).toBeGreaterThan(Date.now() + 3500_000);
      await stop();
      const stoppedAt = Date.now();
      await waitFor('east to flag west stale after its future-dated heartbeats stop', async () => ((await westSeenByEast())?.stale ? true : undefined), (STALE_AFTER_S + 10) * 1000);
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual((STALE_AFTER_S - 2) * 1000);
      // An hour behind: every new heartbeat counts, so west is fresh again at once (not stale for an hour).
      stop = skewedHeartbeats(-3600_000);
      try {
        await waitFor('east to see west fresh on heartbeats an hour old', async () => ((await westSeenByEast())?.stale === false ? true : undefined), 10_000);
        expect(Date.parse((await westSeenByEast())!.lastHeartbeat!)).toBeLessThan(Date.now() - 3500_000);
      } finally {
        await stop();
      }
    } finally {
      await scaleApiserver(west, 1);
    }
    await waitFor('east to see west fresh', async () => ((await westSeenByEast())?.stale === false ? true : undefined), 30_000);
    await converged();
  });

  it('a peer removed after a long outage is relisted in full when it returns', async () => {
    await scaleApiserver(west, 0);
    try {
      await waitFor("east to remove west's cached state after the grace", async () => ((await eastEtcd.getAll().prefix(cachePrefix(WEST)).keys()).length === 0 ? true : undefined), (STALE_AFTER_S + REMOVE_AFTER_S + 30) * 1000);
      // West changes while it is away: the watch will not bring what changed before it came back.
      await scale(west, 'echo', 3);
      await readyPods(west, 'app=echo', 3);
    } finally {
      await scaleApiserver(west, 1);
    }
    await converged();
    const cached = await eastEtcd.get(`${cachePrefix(WEST)}services/default/echo`).string();
    expect(GlobalService.parse(JSON.parse(cached!)).backends.filter((b) => b.ready)).toHaveLength(3);
    await scale(west, 'echo', 2);
    await converged();
  });
});

describe('input', () => {
  const warnings = async (name: string, reason: string) =>
    (await east.get<{ items: { reason?: string; message?: string; type?: string; count?: number }[] }>(`/api/v1/namespaces/default/events?fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}`)).items.filter((e) => e.type === 'Warning' && e.reason === reason);
  const westCopyOfEcho = () => westEtcd.get(`${cachePrefix(EAST)}services/default/echo`).string();

  it('a typo in the annotation of an exported service keeps its last good export everywhere and raises a Warning Event', async () => {
    const before = await westCopyOfEcho();
    expect(GlobalService.parse(JSON.parse(before!)).affinity).toBe('local');
    await east.patch('/api/v1/namespaces/default/services/echo', { metadata: { annotations: { 'skein.io/affinity': 'locl' } } });
    try {
      const [event] = await waitFor('a Warning Event naming the bad annotation', async () => {
        const e = await warnings('echo', 'InvalidSkeinAnnotation');
        return e.length ? e : undefined;
      }, 30_000);
      expect(event!.message).toContain('skein.io/affinity');
      expect(event!.message).toContain('locl');
      expect(event!.message).toContain('still exported');
      // Through a resync and a restart (the last good value comes back from the mesh etcd), west keeps the same copy.
      await restartEastApiserver();
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await westCopyOfEcho()).toBe(before);
      expect((await status(east)).services.find((x) => x.name === 'default/echo')?.warning).toContain('skein.io/affinity');
      // The datapath still follows the endpoints: scaling down still shows in west's copy.
      await scale(east, 'echo', 1);
      await waitFor("west's copy to follow east's endpoints", async () => {
        const raw = await westCopyOfEcho();
        return raw && GlobalService.parse(JSON.parse(raw)).backends.filter((b) => b.ready).length === 1 ? true : undefined;
      }, 60_000);
    } finally {
      await east.patch('/api/v1/namespaces/default/services/echo', { metadata: { annotations: { 'skein.io/affinity': 'local' } } });
      await scale(east, 'echo', 2);
    }
    await readyPods(east, 'app=echo', 2);
    await converged();
    expect((await status(east)).services.find((x) => x.name === 'default/echo')?.warning).toBeUndefined();
  });

  it('a headless global service gets one Warning Event saying why nothing is programmed', async () => {
    await east.post('/api/v1/namespaces/default/services', {
      metadata: { name: 'headless', annotations: { 'skein.io/global': 'true' } },
      spec: { clusterIP: 'None', selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] },
    });
    try {
      const events = await waitFor('a SkeinNotProgrammed Event', async () => {
        const e = await warnings('headless', 'SkeinNotProgrammed');
        return e.length ? e : undefined;
      }, 30_000);
      expect(events[0]!.message).toMatch(/headless/i);
      // Not repeated on every resync.
      await new Promise((r) => setTimeout(r, 5_000));
      const again = await warnings('headless', 'SkeinNotProgrammed');
      expect(again).toHaveLength(1);
      expect(again[0]!.count ?? 1).toBe(1);
    } finally {
      await east.delete('/api/v1/namespaces/default/services/headless');
    }
    await converged();
  });

  it('a dual-stack node is exported with its IPv4 range, said once, and the apiserver still becomes ready', async () => {
    const node1 = await east.get<V1Node>(`/api/v1/nodes/${EAST}-node-1`);
    const v4 = node1.spec!.podCIDRs!.find((c) => !c.includes(':'))!;
    const name = `${EAST}-dual`;
    await east.post('/api/v1/nodes', { metadata: { name }, spec: { podCIDRs: [v4, 'fd00:81::/64'], podCIDR: v4 } });
    try {
      // A restart reads the dual-stack node during the initial sync (which once never finished).
      await restartEastApiserver();
      const exported = await eastEtcd.get(keys.node(EAST, name)).string();
      expect(MeshNode.parse(JSON.parse(exported!)).podCidrs).toEqual([v4]);
      expect(ClusterConfig.parse(JSON.parse((await eastEtcd.get(keys.config(EAST)).string())!)).podCidrs).not.toContain('fd00:81::/64');
      const said = containerLog(stateDir, EAST, `skein-system_${(await apiserverPod(east))!.metadata!.name}_`).split('\n').filter((l) => l.includes('IPv6 pod CIDRs are not meshed') && l.includes(name));
      expect(said).toHaveLength(1);
      await converged();
    } finally {
      await east.delete(`/api/v1/nodes/${name}`);
    }
    await waitFor('the dual-stack node to leave the export', async () => ((await eastEtcd.get(keys.node(EAST, name)).string()) === null ? true : undefined), 30_000);
    await converged();
  });
});

describe('size', () => {
  it('values too big for one list page are relisted in byte-bounded pages; a value over the limit is refused and blocks nothing', async () => {
    const podIp = (await readyPods(west, 'app=echo', 2))[0]!.status!.podIP!;
    // 48 services of ~110 KiB: 5 MiB, past gRPC's 4 MiB message limit for a page of keys read at once.
    const big = Array.from({ length: 48 }, (_, i) => `big-${String(i).padStart(2, '0')}`);
    for (const name of big) await westEtcd.put(keys.service(WEST, 'default', name)).value(westService(name, podIp, 900));
    // One value past the 512 KiB per-value limit.
    const huge = westService('huge', podIp, 5000);
    expect(huge.length).toBeGreaterThan(512 * 1024);
    const tooLargeBefore = await rejectedFor('too-large');
    await westEtcd.put(keys.service(WEST, 'default', 'huge')).value(huge);
    const refused = ['services/default/huge'];
    try {
      await waitFor('east to refuse the huge value', async () => ((await rejectedFor('too-large')) > tooLargeBefore ? true : undefined), 30_000);
      await converged(refused);
      // A relist reads all of it again in pages that fit.
      await restartEastApiserver();
      await converged(refused);
      expect(await eastEtcd.get(`${cachePrefix(WEST)}services/default/huge`).string()).toBeNull();
      // The restarted apiserver counts afresh: its relist refuses the value again.
      await waitFor('the relist to refuse the huge value again', async () => ((await rejectedFor('too-large')) > 0 ? true : undefined), 30_000);
      // West still moves: a change behind the refused value arrives.
      await scale(west, 'echo', 3);
      await waitFor('east to see west scaled to 3', async () => {
        const raw = await eastEtcd.get(`${cachePrefix(WEST)}services/default/echo`).string();
        return raw && GlobalService.parse(JSON.parse(raw)).backends.filter((b) => b.ready).length === 3 ? true : undefined;
      }, 60_000);
      await scale(west, 'echo', 2);
    } finally {
      for (const name of [...big, 'huge']) await westEtcd.delete().key(keys.service(WEST, 'default', name));
    }
    await converged();
  });

  it('a peer over its quota is flagged, its excess refused, its heartbeat still heard; under it again, everything is admitted', async () => {
    await converged();
    // Room for three more keys than east holds of west now (its config and markers are outside the quota).
    const cached = (await eastEtcd.getAll().prefix(cachePrefix(WEST)).keys()).length;
    await addApiserverArgs(east, [`--remote-max-keys=${cached + 3}`]);
    await waitFor('east restarted with a small quota', async () => {
      const pod = await apiserverPod(east);
      return pod?.spec?.containers[0]?.args?.some((a) => a.startsWith('--remote-max-keys=')) && (await westSeenByEast())?.synced ? true : undefined;
    }, 90_000);
    const podIp = (await readyPods(west, 'app=echo', 2))[0]!.status!.podIP!;
    const extra = Array.from({ length: 12 }, (_, i) => `extra-${i}`);
    try {
      for (const name of extra) await westEtcd.put(keys.service(WEST, 'default', name)).value(westService(name, podIp, 1));
      const over = await waitFor('east to flag west over quota', async () => {
        const r = await westSeenByEast();
        return r?.quota?.overQuota ? r : undefined;
      }, 30_000);
      expect(over.rejectedByReason['over-quota']).toBeGreaterThan(0);
      const cachedExtra = (await eastEtcd.getAll().prefix(`${cachePrefix(WEST)}services/default/extra-`).keys()).length;
      expect(cachedExtra).toBeLessThan(extra.length);
      // Its health is not part of the quota: west stays fresh across a full stale period.
      await new Promise((r) => setTimeout(r, (STALE_AFTER_S + 2) * 1000));
      expect((await westSeenByEast())?.stale).toBe(false);
    } finally {
      for (const name of extra) await westEtcd.delete().key(keys.service(WEST, 'default', name));
    }
    await waitFor('east to clear the over-quota flag', async () => ((await westSeenByEast())?.quota?.overQuota === false ? true : undefined), 60_000);
    await converged();
  });
});

describe('maintenance', () => {
  const metric = async (name: string) => {
    const text = await east.get<string>(skeinProxyPath('/metrics'));
    const line = String(text).split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : undefined;
  };

  it('the mesh etcd is compacted on its own and defragmented once enough is free; sync and agents keep up', async () => {
    // 8 MiB written and deleted: pages a compaction frees and a defragmentation gives back.
    const garbage = Array.from({ length: 16 }, (_, i) => `/skein-e2e-garbage/${i}`);
    for (const key of garbage) await eastEtcd.put(key).value('x'.repeat(512 * 1024));
    for (const key of garbage) await eastEtcd.delete().key(key);
    const revision = Number((await eastEtcd.get(keys.config(EAST)).exec()).header.revision);
    await waitFor(`east's mesh etcd to compact past revision ${revision}`, async () => {
      try {
        await eastEtcd.get(keys.config(EAST)).revision(String(revision)).exec();
        return undefined;
      } catch (err) {
        return /compacted/.test((err as Error).message) ? true : undefined;
      }
    }, 60_000);
    expect(await metric('skein_mesh_etcd_compacted_revision')).toBeGreaterThanOrEqual(revision);
    await waitFor('a defragmentation', async () => (((await metric('skein_mesh_etcd_defrags_total')) ?? 0) >= 1 ? true : undefined), 60_000);
    await converged();
  });
});

describe('the datapath', () => {
  type Maps = { update(map: string, key: Buffer, value: Buffer): void; remove(map: string, key: Buffer): boolean; close(): void };
  const BpfObject = (createRequire(import.meta.url)(join(REPO_ROOT, 'datapath', 'build', 'skein_bpf.node')) as { BpfObject: new (obj: string, pinDir: string) => Maps }).BpfObject;
  /** A slot entry of a frontend in 198.18.0.0/15 with no count entry: never read by a connect, only takes room. */
  const fillerKey = (frontend: number, slot: number) => {
    const k = Buffer.alloc(12);
    k.set([198, 18, frontend >> 8, frontend & 0xff], 0);
    k.writeUInt16BE(9, 4);
    k[6] = 6;
    k.writeUInt16LE(slot, 8);
    return k;
  };
  const agentUrl = () => readState(stateDir)!.clusters.find((c) => c.name === EAST)!.agents[0]!;
  const programmed = async () => (await (await fetch(`${agentUrl()}/v1/programmed`)).json()) as { failing: Record<string, { service: string; reason: string }> };

  it("a full BPF map refuses one service, reported with its reason, while another still fails over; it is programmed once there is room", async () => {
    const maps = new BpfObject(join(REPO_ROOT, 'datapath', 'build', 'sock_lb.o'), join(bpffsDir(readState(stateDir)!.tag), EAST, '1', 'maps'));
    const filler: Buffer[] = [];
    const client = (await readyPods(east, 'app=client', 1))[0]!.metadata!.name!;
    const echoVip = (await east.get<V1Service>('/api/v1/namespaces/default/services/echo')).spec!.clusterIP!;
    const answeredBy = async (vip: string) => (await clientRequests(stateDir, EAST, client, ['http', `${vip}:80`, '--count', '4', '--timeout-ms', '1000'])).map((o) => (o.ok ? o.cluster : 'failed'));
    try {
      // Fill east's node's service map to the brim, behind the agent's back (its own bookkeeping still has room).
      fill: for (let frontend = 1; frontend < 64; frontend++) {
        for (let slot = 1; slot <= 65535; slot++) {
          const key = fillerKey(frontend, slot);
          try {
            maps.update('skein_services', key, Buffer.alloc(8));
          } catch {
            break fill;
          }
          filler.push(key);
        }
      }
      expect(filler.length).toBeGreaterThan(200_000);
      await east.post('/api/v1/namespaces/default/services', {
        metadata: { name: 'late', annotations: { 'skein.io/global': 'true', 'skein.io/affinity': 'local' } },
        spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] },
      });
      const lateVip = (await east.get<V1Service>('/api/v1/namespaces/default/services/late')).spec!.clusterIP!;
      await waitFor('the agent to report the new service as refused for a full map', async () =>
        Object.values((await programmed()).failing).some((f) => f.service === 'default/late' && f.reason === 'map-full') ? true : undefined, 30_000);
      await waitFor('skein status --node to show it', async () =>
        (await status(east)).agents.some((a) => Object.values(a.failing ?? {}).some((f) => f.service === 'default/late' && f.reason === 'map-full')) ? true : undefined, 30_000);
      // Another service still fails over and back under the full map (its backend count does not grow).
      expect(await answeredBy(echoVip)).toEqual([EAST, EAST, EAST, EAST]);
      await scale(east, 'echo', 0);
      await waitFor('echo to fail over to west', async () => ((await answeredBy(echoVip)).every((c) => c === WEST) ? true : undefined), 30_000);
      await scale(east, 'echo', 2);
      await readyPods(east, 'app=echo', 2);
      await waitFor('echo to come back to east', async () => ((await answeredBy(echoVip)).every((c) => c === EAST) ? true : undefined), 30_000);
      // Room again: the refused service is retried on its own and programmed.
      for (const key of filler.splice(0, 1000)) maps.remove('skein_services', key);
      await waitFor('the refused service to be programmed', async () =>
        !Object.values((await programmed()).failing).some((f) => f.service === 'default/late') ? true : undefined, 45_000);
      expect(await answeredBy(lateVip)).toEqual([EAST, EAST, EAST, EAST]);
    } finally {
      for (const key of filler) maps.remove('skein_services', key);
      maps.close();
      await east.delete('/api/v1/namespaces/default/services/late').catch(() => {});
    }
    await converged();
  });
});
