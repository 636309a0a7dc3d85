// Issue 4: three clusters meshed with `skein connect`; every cache ends exactly equal to the remote's
// export through scaling, deletion, a remote etcd dying and coming back, a compaction while disconnected,
// and disconnect. Plus the transport's refusals and the sync's distrust of what a remote writes.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { V1Pod } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeRest } from '../../mesh/kube/rest.js';
import { KubeSecrets } from '../../mesh/kube/secrets.js';
import { connectMeshEtcd, listPrefix } from '../../mesh/etcd.js';
import { cachePrefix, exportPrefix, keys } from '../../mesh/schema/keys.js';
import { GlobalService } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { connect, disconnect } from '../../deploy/cli/connect.js';
import { ensureClusterCA } from '../../mtls/cluster-ca.js';
import { issueMeshRootClient, meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { createCA, issueCertificate } from '../../mtls/x509.js';
import { mergedGlobalServices } from '../../datapath/agent/merged-view.js';
import { remoteSecretName } from '../../mesh/link-secrets.js';
import { destroyCgroup } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { etcdCgroup, restartEtcd } from '../../testbed/etcd.js';
import { inNetns } from '../../testbed/netns.js';
import { meshPki } from '../../testbed/skein-apiserver.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { podNetnsName } from '../../testbed/topology.js';
import { addApiserverArgs, clusterKubeconfig, clusterRest, meshEtcd, readyPods, scale, tempStateDir } from './helpers.js';

const NAMES = ['m1', 'm2', 'm3'] as const;
const stateDir = tempStateDir('mesh');
const etcd: Record<string, Etcd3> = {};

const kubeconfig = (cluster: string) => clusterKubeconfig(stateDir, cluster);

const status = (cluster: string) => clusterRest(stateDir, cluster).get<ApiserverStatus>(skeinProxyPath('/v1/status'));
const remoteOf = async (viewer: string, remote: string) => (await status(viewer)).remotes.find((r) => r.cluster === remote);

/**
 * The remote's export and the viewer's cache of it, keyed by the part after the prefix (heartbeat aside, and
 * the trust bundle: a peer's bundle is checked and published for the agents, never cached).
 */
async function exportAndCache(viewer: string, remote: string) {
  const strip = (all: Record<string, string>, prefix: string) =>
    Object.fromEntries(Object.entries(all).map(([k, v]): [string, string] => [k.slice(prefix.length), v]).filter(([k]) => k !== 'heartbeat' && k !== 'bundle'));
  const [exp, cache] = await Promise.all([etcd[remote]!.getAll().prefix(exportPrefix(remote)).strings(), etcd[viewer]!.getAll().prefix(cachePrefix(remote)).strings()]);
  return { exported: strip(exp, exportPrefix(remote)), cached: strip(cache, cachePrefix(remote)) };
}

async function cachesEqualExports(pairs: [string, string][] = NAMES.flatMap((v) => NAMES.filter((r) => r !== v).map((r) => [v, r] as [string, string]))) {
  for (const [viewer, remote] of pairs) {
    // The snapshot in which both were read equal (a second read could catch a still-changing export).
    const { exported, cached } = await waitFor(`${viewer}'s cache of ${remote} to equal ${remote}'s export`, async () => {
      const snap = await exportAndCache(viewer, remote);
      return JSON.stringify(snap.exported) === JSON.stringify(snap.cached) ? snap : undefined;
    }, 60_000);
    expect(cached).toEqual(exported);
    expect(Object.keys(cached).length).toBeGreaterThan(5);
  }
}

const cachedService = async (viewer: string, remote: string, name: string) => {
  const raw = await etcd[viewer]!.get(`${cachePrefix(remote)}services/default/${name}`).string();
  return raw ? GlobalService.parse(JSON.parse(raw)) : undefined;
};

beforeAll(async () => {
  await up({ stateDir, clusters: NAMES.map((name, i) => ({ name, id: 51 + i })), nodes: 1, echo: true });
  for (const n of NAMES) etcd[n] = meshEtcd(stateDir, n);
  const quiet = () => {};
  await connect(kubeconfig('m1'), kubeconfig('m2'), quiet);
  await connect(kubeconfig('m1'), kubeconfig('m3'), quiet);
  await connect(kubeconfig('m2'), kubeconfig('m3'), quiet);
});

afterAll(async () => {
  for (const e of Object.values(etcd)) e.close();
  await down(stateDir);
});

describe('three connected clusters', () => {
  it('each cluster holds every other cluster global service with that cluster on its backends', async () => {
    await cachesEqualExports();
    for (const viewer of NAMES) {
      const merged = (await mergedGlobalServices(etcd[viewer]!, viewer)).get('default/echo')!;
      expect(merged.affinity).toBe('local');
      expect(merged.clusters.map((c) => [c.cluster, c.local])).toEqual(NAMES.map((n) => [n, n === viewer]).sort((a, b) => Number(b[1]) - Number(a[1])));
      for (const c of merged.clusters) {
        expect(c.service.cluster).toBe(c.cluster);
        expect(c.service.backends).toHaveLength(2);
        const id = 51 + NAMES.indexOf(c.cluster as (typeof NAMES)[number]);
        for (const b of c.service.backends) expect(b.ip.startsWith(`10.${id}.`)).toBe(true);
      }
    }
    const s = await status('m1');
    expect(s.remotes.map((r) => [r.cluster, r.connected, r.synced, r.stale, r.rejected])).toEqual([
      ['m2', true, true, false, 0],
      ['m3', true, true, false, 0],
    ]);
  });

  it('connect is idempotent: a second run changes nothing', async () => {
    const before = await clusterRest(stateDir, 'm1').get<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/skein-system/secrets/${remoteSecretName('m2')}`);
    const r = await connect(kubeconfig('m1'), kubeconfig('m2'), () => {});
    expect(r.changed).toBe(false);
    const after = await clusterRest(stateDir, 'm1').get<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/skein-system/secrets/${remoteSecretName('m2')}`);
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  });

  it('refuses to connect a cluster to itself', async () => {
    await expect(connect(kubeconfig('m1'), kubeconfig('m1'), () => {})).rejects.toThrow(/both contexts are cluster "m1"/);
  });

  it('propagates scaling and deletion to every other cluster', async () => {
    const rest = clusterRest(stateDir, 'm2');
    await scale(rest, 'echo', 3);
    for (const viewer of ['m1', 'm3']) {
      await waitFor(`${viewer} to see 3 ready m2 backends`, async () => ((await cachedService(viewer, 'm2', 'echo'))?.backends.filter((b) => b.ready).length === 3 ? true : undefined), 60_000);
    }
    await rest.post('/api/v1/namespaces/default/services', { metadata: { name: 'temp', annotations: { 'skein.io/global': 'true' } }, spec: { selector: { app: 'echo' }, ports: [{ port: 80, targetPort: 8080 }] } });
    await waitFor('m3 to see m2 temp', () => cachedService('m3', 'm2', 'temp'), 30_000);
    await rest.delete('/api/v1/namespaces/default/services/temp');
    await waitFor('m3 to lose m2 temp', async () => ((await cachedService('m3', 'm2', 'temp')) === undefined ? true : undefined), 30_000);
    await scale(rest, 'echo', 2);
    await readyPods(rest, 'app=echo', 2);
    await cachesEqualExports();
  });

  it('survives a remote mesh etcd dying and coming back', async () => {
    const argv = meshPki(statePaths(stateDir).cluster('m2')).argv;
    await destroyCgroup(etcdCgroup(argv));
    await waitFor('m1 to see m2 disconnected', async () => ((await remoteOf('m1', 'm2'))?.connected === false ? true : undefined), 30_000);
    // Kubernetes keeps changing meanwhile; m2's exporter catches up once its etcd is back.
    await scale(clusterRest(stateDir, 'm2'), 'echo', 1);
    await restartEtcd(argv);
    etcd.m2!.close();
    etcd.m2 = meshEtcd(stateDir, 'm2');
    await waitFor('m2 echo to show 1 backend in m1', async () => ((await cachedService('m1', 'm2', 'echo'))?.backends.length === 1 ? true : undefined), 60_000);
    await cachesEqualExports();
    expect((await remoteOf('m1', 'm2'))?.connected).toBe(true);
  });

  it('relists and applies only the difference after a compaction while disconnected', async () => {
    // Cut m1's replication of m3 at the socket: reject m1 skein-apiserver's connections to m3's etcd.
    const state = readState(stateDir)!;
    const port = new URL(state.clusters.find((c) => c.name === 'm3')!.meshEtcdUrl).port;
    const apiPods = (await clusterRest(stateDir, 'm1').get<{ items: V1Pod[] }>('/api/v1/namespaces/skein-system/pods')).items;
    const podNs = podNetnsName(state.tag, apiPods[0]!.metadata!.uid!);
    const rule = ['OUTPUT', '-p', 'tcp', '--dport', port, '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await inNetns(podNs, 'iptables', ['-I', ...rule]);
    try {
      const relistsBefore = (await remoteOf('m1', 'm3'))!.relists;
      const argv = meshPki(statePaths(stateDir).cluster('m3')).argv;
      await destroyCgroup(etcdCgroup(argv)); // drops m1's established watch
      await restartEtcd(argv);
      etcd.m3!.close();
      etcd.m3 = meshEtcd(stateDir, 'm3');
      await waitFor('m1 to see m3 disconnected', async () => ((await remoteOf('m1', 'm3'))?.connected === false ? true : undefined), 30_000);
      const rest = clusterRest(stateDir, 'm3');
      await scale(rest, 'echo', 3);
      await waitFor('m3 export to show 3 backends', async () => {
        const raw = await etcd.m3!.get(keys.service('m3', 'default', 'echo')).string();
        return raw && GlobalService.parse(JSON.parse(raw)).backends.filter((b) => b.ready).length === 3 ? true : undefined;
      }, 60_000);
      const head = (await etcd.m3.get(keys.config('m3')).exec()).header.revision;
      await etcd.m3.kv.compact({ revision: head, physical: true });
      const unchangedKey = `${cachePrefix('m3')}nodes/m3-node-1`;
      const nodeRevBefore = (await etcd.m1!.get(unchangedKey).exec()).kvs[0]!.mod_revision;
      await inNetns(podNs, 'iptables', ['-D', ...rule]);
      await waitFor('m1 to relist m3', async () => ((await remoteOf('m1', 'm3'))!.relists > relistsBefore ? true : undefined), 60_000);
      await cachesEqualExports([['m1', 'm3']]);
      expect((await cachedService('m1', 'm3', 'echo'))?.backends.filter((b) => b.ready)).toHaveLength(3);
      // Only real changes were written: an unchanged key kept its revision (no delete-then-add flap).
      expect((await etcd.m1!.get(unchangedKey).exec()).kvs[0]!.mod_revision).toBe(nodeRevBefore);
    } finally {
      await inNetns(podNs, 'iptables', ['-D', ...rule]).catch(() => {});
      await scale(clusterRest(stateDir, 'm3'), 'echo', 2);
    }
    await cachesEqualExports();
  });

  it('flags a remote whose heartbeat stops as stale, keeps its state, and clears the flag when it returns', async () => {
    const m1 = clusterRest(stateDir, 'm1');
    const deploy = '/apis/apps/v1/namespaces/skein-system/deployments/skein-apiserver';
    await addApiserverArgs(m1, ['--remote-stale-after=3']);
    await waitFor('m1 restarted with --remote-stale-after=3, synced with m3', async () => {
      const pods = (await m1.get<{ items: V1Pod[] }>('/api/v1/namespaces/skein-system/pods')).items;
      const s = await status('m1');
      return pods.length === 1 && pods[0]!.spec!.containers[0]!.args!.includes('--remote-stale-after=3') && s.remotes.find((r) => r.cluster === 'm3')?.synced ? true : undefined;
    }, 90_000);
    const m3 = clusterRest(stateDir, 'm3');
    await m3.patch(`${deploy}/scale`, { spec: { replicas: 0 } });
    const m3View = async () => (await mergedGlobalServices(etcd.m1!, 'm1')).get('default/echo')!.clusters.find((c) => c.cluster === 'm3');
    try {
      await waitFor('m1 to flag m3 stale', async () => ((await remoteOf('m1', 'm3'))?.stale ? true : undefined), 60_000);
      // Agents see it through the sync status key in the local mesh etcd (published every 2 s).
      const staleView = await waitFor('the merged view to flag m3 stale', async () => ((await m3View())?.stale ? m3View() : undefined), 10_000);
      expect(staleView.service.backends.length).toBe(2);
    } finally {
      // The later tests need m3's apiserver back, whatever happened here.
      await m3.patch(`${deploy}/scale`, { spec: { replicas: 1 } });
    }
    await waitFor('m1 to see m3 fresh again', async () => ((await remoteOf('m1', 'm3'))?.stale === false ? true : undefined), 90_000);
    await waitFor('the merged view to clear the flag', async () => ((await m3View())?.stale === false ? true : undefined), 10_000);
    await cachesEqualExports([['m1', 'm3'], ['m2', 'm3']]);
  });

  it('reads big prefixes in pages of one consistent snapshot', async () => {
    const { kvs, revision } = await listPrefix(etcd.m1!, exportPrefix('m1'), 2);
    const all = await etcd.m1!.getAll().prefix(exportPrefix('m1')).exec();
    expect(kvs.map((kv) => kv.key.toString())).toEqual(all.kvs.map((kv) => kv.key.toString()).sort());
    expect(revision).toBeGreaterThan(0);
  });

  it('rejects remote keys that claim another cluster or break the schema, and counts them', async () => {
    const rejectedBefore = (await remoteOf('m1', 'm2'))!.rejected;
    const evil = { cluster: 'm3', namespace: 'default', name: 'evil', shared: true, affinity: 'none', clusterIps: [], ports: [], backends: [] };
    await etcd.m2!.put(keys.service('m2', 'default', 'evil')).value(JSON.stringify(evil));
    await etcd.m2!.put(keys.service('m2', 'default', 'broken')).value('{"cluster":"m2"');
    await waitFor('m1 to count two rejections', async () => ((await remoteOf('m1', 'm2'))!.rejected >= rejectedBefore + 2 ? true : undefined), 30_000);
    expect(await etcd.m1!.get(`${cachePrefix('m2')}services/default/evil`).string()).toBeNull();
    expect(await etcd.m1!.get(`${cachePrefix('m2')}services/default/broken`).string()).toBeNull();
    await etcd.m2!.delete().key(keys.service('m2', 'default', 'evil'));
    await etcd.m2!.delete().key(keys.service('m2', 'default', 'broken'));
  });

  it('renews a peer identity at half-life and keeps replicating across its expiry without a relist', async () => {
    const m2 = clusterRest(stateDir, 'm2');
    await addApiserverArgs(m2, ['--remote-identity-ttl=12']);
    const relists = (await remoteOf('m1', 'm2'))!.relists;
    const first = await waitFor('m1 to switch to an identity m2 renewed', async () => {
      const r = await remoteOf('m1', 'm2');
      return r && r.rotations >= 1 && Date.parse(r.identityExpires!) - Date.now() < 13_000 ? r : undefined;
    }, 90_000);
    await waitFor('a second renewal', async () => ((await remoteOf('m1', 'm2'))!.rotations > first.rotations ? true : undefined), 30_000);
    // Outlive the first renewed identity, then force new connections: only the current identity can work.
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(first.identityExpires!) - Date.now() + 1_000)));
    const argv = meshPki(statePaths(stateDir).cluster('m2')).argv;
    await destroyCgroup(etcdCgroup(argv));
    await restartEtcd(argv);
    etcd.m2!.close();
    etcd.m2 = meshEtcd(stateDir, 'm2');
    await scale(m2, 'echo', 3);
    await waitFor('m1 to see 3 m2 backends', async () => ((await cachedService('m1', 'm2', 'echo'))?.backends.filter((b) => b.ready).length === 3 ? true : undefined), 60_000);
    const now = await remoteOf('m1', 'm2');
    expect(now).toMatchObject({ connected: true, synced: true, relists });
    // The renewed identity is stored for the next start of m1's apiserver.
    const stored = await new KubeSecrets(new KubeRest(kubeconfig('m1'))).get(remoteSecretName('m2'));
    expect(new Date(new X509Certificate(stored!['tls.crt']!).validTo).getTime()).toBeGreaterThan(Date.now() - 12_000);
    await scale(m2, 'echo', 2);
    await cachesEqualExports([['m1', 'm2'], ['m3', 'm2']]);
  });

  it('disconnect removes the link both ways and the remote state from both caches', async () => {
    await disconnect(kubeconfig('m1'), kubeconfig('m2'), () => {});
    expect((await status('m1')).remotes.map((r) => r.cluster)).toEqual(['m3']);
    expect((await status('m2')).remotes.map((r) => r.cluster)).toEqual(['m3']);
    await waitFor('caches of each other to be empty', async () => {
      const [a, b] = await Promise.all([etcd.m1!.getAll().prefix(cachePrefix('m2')).keys(), etcd.m2!.getAll().prefix(cachePrefix('m1')).keys()]);
      return a.length === 0 && b.length === 0 ? true : undefined;
    }, 30_000);
    await cachesEqualExports([['m1', 'm3'], ['m3', 'm1'], ['m2', 'm3'], ['m3', 'm2']]);
  });
});

describe('mesh etcd transport security', () => {
  const endpoint = () => readState(stateDir)!.clusters.find((c) => c.name === 'm1')!.meshEtcdUrl;
  const caPem = () => readFileSync(meshPki(statePaths(stateDir).cluster('m1')).ca, 'utf8');
  const attempt = async (tls?: { certPem: string; keyPem: string }) => {
    const client = tls ? connectMeshEtcd({ endpoints: [endpoint()], tls: { caPem: caPem(), ...tls }, callTimeoutMs: 3_000, serverName: meshEtcdServerName('m1') }) : connectMeshEtcd({ endpoints: [endpoint()], callTimeoutMs: 3_000, serverName: meshEtcdServerName('m1') });
    try {
      return await client.get(keys.config('m1')).string();
    } finally {
      client.close();
    }
  };

  it('refuses a client without a certificate', async () => {
    await expect(attempt()).rejects.toThrow();
  });

  it('refuses a certificate from an unknown CA', async () => {
    const foreign = await createCA({ commonName: 'not the mesh', ttlMs: 3600_000 });
    await expect(attempt(await issueCertificate(foreign, { commonName: 'root', usage: 'client', ttlMs: 3600_000 }))).rejects.toThrow();
  });

  it('refuses an expired certificate from the right CA', async () => {
    const ca = await ensureClusterCA(new KubeSecrets(new KubeRest(kubeconfig('m1'))), 'm1');
    const expired = await issueMeshRootClient(ca, -60_000);
    await expect(attempt(expired)).rejects.toThrow();
    // The same CA with a valid lifetime works: the refusal is about expiry, not the CA.
    expect(await attempt(await issueMeshRootClient(ca))).toContain('"name":"m1"');
  });

  it("lets a peer's identity read only the export prefix, never write", async () => {
    const secret = await new KubeSecrets(new KubeRest(kubeconfig('m3'))).get(remoteSecretName('m1'));
    const client = connectMeshEtcd({ endpoints: [endpoint()], tls: { caPem: secret!['ca.crt']!, certPem: secret!['tls.crt']!, keyPem: secret!['tls.key']! }, callTimeoutMs: 3_000, serverName: meshEtcdServerName('m1') });
    try {
      expect(await client.get(keys.config('m1')).string()).toContain('"id":51');
      await expect(client.getAll().prefix(cachePrefix('m3')).keys()).rejects.toThrow(/permission denied/i);
      await expect(client.put(keys.config('m1')).value('{}')).rejects.toThrow(/permission denied/i);
    } finally {
      client.close();
    }
  });
});
