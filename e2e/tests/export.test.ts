// Issue 3: skein-apiserver exports global services (with ready backends), identities, IPs and nodes into
// the mesh etcd, follows scale/readiness/deletion, refuses bad annotations with an Event, and reconciles
// after a restart without rewriting unchanged keys.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportPrefix, keys } from '../../mesh/schema/keys.js';
import { GlobalService, Heartbeat, IdentityValue, IpEntry, MeshNode } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import type { Pod } from '../../mesh/kube/objects.js';
import type { ApiserverStatus, ExportStatus } from '../../mesh/status.js';
import { waitFor } from '../../testbed/daemon.js';
import { containerCgroup, down, up } from '../../testbed/testbed.js';
import { addApiserverArgs, clientRequests, clusterRest, meshEtcd, podIp, pods, readyPods, scale, tempStateDir } from './helpers.js';

const CLUSTER = 'ex';
const stateDir = tempStateDir('export');
let etcd: Etcd3;
let rest: KubeRest;

async function exported(ns: string, name: string): Promise<GlobalService | undefined> {
  const raw = await etcd.get(keys.service(CLUSTER, ns, name)).string();
  return raw === null ? undefined : GlobalService.parse(JSON.parse(raw));
}

const until = <T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000) => waitFor(what, probe, ms);

function service(name: string, annotations: Record<string, string>, selector = { app: 'echo' }) {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default', annotations }, spec: { selector, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } };
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: 31 }], nodes: 2, echo: true, kubelet: true });
  etcd = meshEtcd(stateDir, CLUSTER);
  rest = clusterRest(stateDir, CLUSTER);
});

afterAll(async () => {
  etcd?.close();
  await down(stateDir);
});

describe('skein-apiserver export', () => {
  it('exports the global echo service with its ready backends, node and zone', async () => {
    const echo = await readyPods(rest, 'app=echo', 2);
    const svc = await until('echo exported with 2 ready backends', async () => {
      const s = await exported('default', 'echo');
      return s && s.backends.filter((b) => b.ready).length === 2 ? s : undefined;
    });
    expect(svc).toMatchObject({ cluster: CLUSTER, namespace: 'default', name: 'echo', shared: true, affinity: 'local' });
    expect(svc.clusterIps[0]).toMatch(/^100\.64\./);
    expect(svc.ports.map((p) => `${p.name}/${p.port}/${p.protocol}`).sort()).toEqual(['http/80/TCP', 'tcp/9000/TCP', 'udp/80/UDP']);
    expect(svc.backends.map((b) => b.ip).sort()).toEqual(echo.map(podIp).sort());
    for (const b of svc.backends) {
      expect(b.ports).toEqual({ http: { port: 8080, protocol: 'TCP' }, tcp: { port: 9000, protocol: 'TCP' }, udp: { port: 8080, protocol: 'UDP' } });
      expect(b.node).toMatch(/^ex-node-\d$/);
      expect(b.zone).toMatch(/^ex-[ab]$/);
    }
  });

  it('exports nodes, pod IPs and their security identities with the cluster ID in the upper bits', async () => {
    const node = MeshNode.parse(JSON.parse((await etcd.get(keys.node(CLUSTER, 'ex-node-1')).string())!));
    expect(node).toMatchObject({ cluster: CLUSTER, podCidrs: ['10.31.1.0/24'], zone: 'ex-a' });
    const [echo] = await readyPods(rest, 'app=echo', 2);
    const ip = IpEntry.parse(JSON.parse((await etcd.get(keys.ip(CLUSTER, podIp(echo!))).string())!));
    expect(ip).toMatchObject({ namespace: 'default', pod: echo!.metadata!.name });
    expect(ip.identity >> 16).toBe(31);
    const identity = IdentityValue.parse(JSON.parse((await etcd.get(keys.identity(CLUSTER, ip.identity)).string())!));
    expect(identity.labels).toMatchObject({ 'k8s:app': 'echo', 'k8s:io.kubernetes.pod.namespace': 'default', 'k8s:io.skein.cluster': CLUSTER });
    // Both echo replicas share one label set, hence one identity.
    const all = await etcd.getAll().prefix(keys.kindPrefix(CLUSTER, 'ips')).strings();
    const echoIds = Object.values(all).map((v) => IpEntry.parse(JSON.parse(v))).filter((e) => e.pod.startsWith('echo-')).map((e) => e.identity);
    expect(new Set(echoIds).size).toBe(1);
  });

  it('follows a readiness change of one backend both ways', async () => {
    const [client] = await readyPods(rest, 'app=client', 1);
    const [target] = await readyPods(rest, 'app=echo', 2);
    await clientRequests(stateDir, CLUSTER, client!.metadata!.name!, ['http', `http://${podIp(target!)}:8080/fail`]);
    await until('the backend to turn unready in the mesh etcd', async () => ((await exported('default', 'echo'))?.backends.find((b) => b.ip === podIp(target!))?.ready === false ? true : undefined));
    await clientRequests(stateDir, CLUSTER, client!.metadata!.name!, ['http', `http://${podIp(target!)}:8080/recover`]);
    await until('the backend to turn ready again', async () => ((await exported('default', 'echo'))?.backends.find((b) => b.ip === podIp(target!))?.ready === true ? true : undefined));
  });

  it('follows scaling up and down', async () => {
    await scale(rest, 'echo', 3);
    await until('3 ready backends', async () => ((await exported('default', 'echo'))?.backends.filter((b) => b.ready).length === 3 ? true : undefined), 60_000);
    await scale(rest, 'echo', 1);
    await until('exactly 1 backend', async () => ((await exported('default', 'echo'))?.backends.length === 1 ? true : undefined), 60_000);
    await scale(rest, 'echo', 2);
    await readyPods(rest, 'app=echo', 2);
  });

  it('does not export a service without the global annotation, and removes one that loses it or is deleted', async () => {
    await rest.post('/api/v1/namespaces/default/services', service('plain', {}));
    await rest.post('/api/v1/namespaces/default/services', service('cilium-style', { 'service.cilium.io/global': 'true', 'service.cilium.io/affinity': 'remote' }));
    // The later service appearing proves the exporter has seen the earlier one too.
    const cilium = await until('cilium-style exported', () => exported('default', 'cilium-style'));
    expect(cilium.affinity).toBe('remote');
    expect(await exported('default', 'plain')).toBeUndefined();
    await rest.patch('/api/v1/namespaces/default/services/cilium-style', { metadata: { annotations: { 'service.cilium.io/global': 'false' } } });
    await until('cilium-style unexported', async () => ((await exported('default', 'cilium-style')) === undefined ? true : undefined));
    await rest.post('/api/v1/namespaces/default/services', service('doomed', { 'skein.io/global': 'true' }));
    await until('doomed exported', () => exported('default', 'doomed'));
    await rest.delete('/api/v1/namespaces/default/services/doomed');
    await until('doomed removed', async () => ((await exported('default', 'doomed')) === undefined ? true : undefined));
  });

  it('refuses a malformed annotation with a Warning Event naming the annotation and the allowed values', async () => {
    await rest.post('/api/v1/namespaces/default/services', service('bad', { 'skein.io/global': 'true', 'skein.io/affinity': 'nearest' }));
    const event = await until('the InvalidSkeinAnnotation event', async () => {
      const list = await rest.get<{ items: { reason: string; message: string; type: string; involvedObject: { name: string } }[] }>('/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dbad');
      return list.items.find((e) => e.reason === 'InvalidSkeinAnnotation');
    });
    expect(event.type).toBe('Warning');
    expect(event.message).toContain('skein.io/affinity: "nearest" is not allowed; use "local", "remote" or "none"');
    expect(await exported('default', 'bad')).toBeUndefined();
    const metrics = await rest.get<string>(skeinProxyPath('/metrics'));
    expect(metrics).toMatch(/skein_invalid_annotations_total [1-9]/);
    expect(metrics).toMatch(/skein_exported_services 1/);
  });

  it('reconciles after a restart: stale keys go, unchanged keys are not rewritten', async () => {
    // key -> [value, mod_revision], leaving out the lease-bound heartbeat and synced markers.
    const modRevisions = async () => {
      const res = await etcd.getAll().prefix(exportPrefix(CLUSTER)).exec();
      return Object.fromEntries(res.kvs.filter((kv) => !/\/(heartbeat|synced\/)/.test(kv.key.toString())).map((kv) => [kv.key.toString(), [kv.value.toString(), kv.mod_revision]]));
    };
    await rest.post('/api/v1/namespaces/default/services', service('leftover', { 'skein.io/global': 'true' }));
    await until('leftover exported', () => exported('default', 'leftover'));
    // Pause the exporter, change Kubernetes behind its back, then kill it: its container restarts (the mesh
    // etcd beside it in the pod keeps its data) and must reconcile from what it finds.
    const [apiserverPod] = (await rest.get<{ items: Pod[] }>('/api/v1/namespaces/skein-system/pods?labelSelector=app%3Dskein-apiserver')).items;
    const exporter = await containerCgroup(stateDir, CLUSTER, `skein-system/${apiserverPod!.metadata!.name}`, 'apiserver');
    const restarts = () => apiserverPod && rest.get<Pod>(`/api/v1/namespaces/skein-system/pods/${apiserverPod.metadata!.name}`).then((p) => p.status!.containerStatuses!.find((c) => c.name === 'apiserver')!.restartCount);
    const restartsBefore = await restarts();
    writeFileSync(join(exporter, 'cgroup.freeze'), '1');
    await rest.delete('/api/v1/namespaces/default/services/leftover');
    const before = await modRevisions();
    expect(before[keys.service(CLUSTER, 'default', 'leftover')]).toBeDefined();
    writeFileSync(join(exporter, 'cgroup.kill'), '1');
    await until('the exporter restarted', async () => ((await restarts()) === restartsBefore! + 1 ? true : undefined), 60_000);
    await until('skein-apiserver synced again', async () => ((await rest.get<ExportStatus>(skeinProxyPath('/v1/status'))).synced ? true : undefined), 90_000);
    const after = await modRevisions();
    expect(after[keys.service(CLUSTER, 'default', 'leftover')]).toBeUndefined();
    expect(Object.keys(after).sort()).toEqual(Object.keys(before).filter((k) => !k.endsWith('/leftover')).sort());
    // Nothing was rewritten: every key keeps its value and revision (the pod, and so its IP entry, is the same).
    for (const k of Object.keys(after)) expect([k, after[k]]).toEqual([k, before[k]]);
    const status = await rest.get<ExportStatus>(skeinProxyPath('/v1/status'));
    expect(status.services.map((s) => s.name)).toEqual(['default/echo']);
    expect(status.services[0]).toMatchObject({ readyBackends: 2, backends: 2 });
    expect((await pods(rest, 'app=echo')).length).toBe(2);
  });

  it('renews its own mesh etcd identity at half-life and keeps exporting and heartbeating across expiries', async () => {
    await addApiserverArgs(rest, ['--mesh-identity-ttl=12']);
    const status = () => rest.get<ApiserverStatus>(skeinProxyPath('/v1/status'));
    await until('three renewals', async () => ((await status()).meshIdentity?.rotations ?? 0) >= 3 ? true : undefined, 90_000);
    const s = await status();
    expect(Date.parse(s.meshIdentity!.expires) - Date.now()).toBeLessThan(13_000);
    // The first identity is long expired by now; exports still flow and the heartbeat lease is alive.
    await scale(rest, 'echo', 3);
    await until('3 ready backends after renewals', async () => ((await exported('default', 'echo'))?.backends.filter((b) => b.ready).length === 3 ? true : undefined), 60_000);
    const hb = Heartbeat.parse(JSON.parse((await etcd.get(keys.heartbeat(CLUSTER)).string())!));
    expect(Date.now() - Date.parse(hb.at)).toBeLessThan(10_000);
    await scale(rest, 'echo', 2);
  });
});
