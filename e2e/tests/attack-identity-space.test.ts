// Issue 10, hole 8: security identities can be exhausted. The attacker is a tenant who may only create pods
// in one namespace. Per-instance labels (every Job run's controller-uid/job-name, an Indexed Job's
// completion index) must not mint identities, and identities nobody uses any more must be released after
// --identity-gc-grace, their allocation bookkeeping in the mesh etcd included, also ones a restarted
// apiserver finds left over from before. (The test bed runs no Job controller, so the tenant's pods carry
// the labels one would set for each run; anyone who may create pods can set them anyway.)
import { createHash } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { KubeConfig } from '@kubernetes/client-node';
import type { Pod } from '../../mesh/kube/objects.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeRest } from '../../mesh/kube/rest.js';
import { keys } from '../../mesh/schema/keys.js';
import { IdentityValue, IpEntry } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import { waitFor } from '../../testbed/daemon.js';
import { down, up } from '../../testbed/testbed.js';
import { rollOutApiserverArgs, clusterKubeconfig, clusterRest, meshEtcd, tempStateDir } from './helpers.js';

const CLUSTER = 'idgc';
const CLUSTER_ID = 43;
const NS = 'tenant';
const GRACE_SECONDS = 3;
const stateDir = tempStateDir('identity-space');
let etcd: Etcd3;
let admin: KubeRest;
let attacker: KubeRest;

/** A binding an earlier apiserver process left behind, with no pod using it. */
const STALE_ID = 65_000;
const STALE_HASH = createHash('sha256').update('labels nobody uses any more').digest('hex');

const until = <T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000) => waitFor(what, probe, ms);

/** A tenant's credentials: a service account allowed pods in its namespace, nothing else. */
async function tenantRest(): Promise<KubeRest> {
  await admin.post('/api/v1/namespaces', { metadata: { name: NS } });
  await admin.post(`/api/v1/namespaces/${NS}/serviceaccounts`, { metadata: { name: 'attacker' } });
  await admin.post(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/roles`, {
    metadata: { name: 'workloads' },
    rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['create', 'delete', 'get', 'list', 'watch'] }],
  });
  await admin.post(`/apis/rbac.authorization.k8s.io/v1/namespaces/${NS}/rolebindings`, {
    metadata: { name: 'attacker-workloads' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'workloads' },
    subjects: [{ kind: 'ServiceAccount', name: 'attacker', namespace: NS }],
  });
  const { status } = await admin.post<{ status: { token: string } }>(`/api/v1/namespaces/${NS}/serviceaccounts/attacker/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 3600 },
  });
  const base = clusterKubeconfig(stateDir, CLUSTER);
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [base.getCurrentCluster()!],
    users: [{ name: 'attacker', token: status.token }],
    contexts: [{ name: 'attacker', cluster: base.getCurrentCluster()!.name, user: 'attacker', namespace: NS }],
    currentContext: 'attacker',
  });
  // The pods' service account must exist before pods can be admitted.
  await until('the tenant namespace\'s default service account', async () => ((await admin.get<{ items: unknown[] }>(`/api/v1/namespaces/${NS}/serviceaccounts`)).items.length >= 2 ? true : undefined));
  return new KubeRest(kc);
}

/** One pod of a Job run, labelled as the Job controller labels it (an Indexed Job adds the completion index). */
const jobRunPod = (job: string, controllerUid: string, index?: number) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name: index === undefined ? job : `${job}-${index}`,
    labels: {
      app: 'report',
      'controller-uid': controllerUid,
      'batch.kubernetes.io/controller-uid': controllerUid,
      'job-name': job,
      'batch.kubernetes.io/job-name': job,
      ...(index === undefined ? {} : { 'batch.kubernetes.io/job-completion-index': String(index) }),
    },
  },
  spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'ghcr.io/skein-mesh/skein-client:0.1.0' }] },
});
const RUNS = [jobRunPod('report-28934561', '0b6c1d2e-1111'), jobRunPod('report-28934562', '0b6c1d2e-2222'), jobRunPod('report-indexed', '0b6c1d2e-3333', 0), jobRunPod('report-indexed', '0b6c1d2e-3333', 1)];

async function tenantPods(): Promise<Pod[]> {
  return (await attacker.get<{ items: Pod[] }>(`/api/v1/namespaces/${NS}/pods`)).items;
}

async function exportedIdentities(): Promise<IdentityValue[]> {
  const all = await etcd.getAll().prefix(keys.kindPrefix(CLUSTER, 'identities')).strings();
  return Object.values(all).map((v) => IdentityValue.parse(JSON.parse(v)));
}

const tenantIdentities = async () => (await exportedIdentities()).filter((i) => i.labels['k8s:io.kubernetes.pod.namespace'] === NS);
const bookkeeping = async (localId: number) => ({
  id: await etcd.get(keys.identityId(CLUSTER, localId)).string(),
  index: Object.entries(await etcd.getAll().prefix(keys.identityIndex(CLUSTER, '')).strings()).filter(([, v]) => Number(v) === localId).map(([k]) => k),
});

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: CLUSTER_ID }], nodes: 1, echo: false });
  etcd = meshEtcd(stateDir, CLUSTER);
  admin = clusterRest(stateDir, CLUSTER);
  // Left by "an earlier process": the restarted apiserver below finds it at start.
  await etcd.put(keys.identityIndex(CLUSTER, STALE_HASH)).value(String(STALE_ID));
  await etcd.put(keys.identityId(CLUSTER, STALE_ID)).value(STALE_HASH);
  await rollOutApiserverArgs(admin, [`--identity-gc-grace=${GRACE_SECONDS}`]);
  attacker = await tenantRest();
});

afterAll(async () => {
  etcd?.close();
  await down(stateDir);
});

describe('attack: exhausting the security identity space', () => {
  it('the tenant cannot act outside its namespace (the attacker is only a workload creator)', async () => {
    await expect(attacker.get('/api/v1/namespaces/default/pods')).rejects.toThrow(/403/);
    await expect(attacker.post(`/api/v1/namespaces/${NS}/services`, { metadata: { name: 'x' }, spec: { ports: [{ port: 80 }] } })).rejects.toThrow(/403/);
  });

  it('pods of different Job runs, differing only in per-instance labels, share one identity', async () => {
    for (const pod of RUNS) await attacker.post(`/api/v1/namespaces/${NS}/pods`, pod);
    const running = await until(`${RUNS.length} running tenant pods`, async () => {
      const pods = (await tenantPods()).filter((p) => p.status?.podIP && p.status.phase === 'Running');
      return pods.length === RUNS.length ? pods : undefined;
    });
    // They really differ: each run has its own controller-uid and job-name, the indexed ones an index.
    expect(new Set(running.map((p) => p.metadata!.labels!['controller-uid'])).size).toBe(3);
    expect(new Set(running.map((p) => JSON.stringify(p.metadata!.labels))).size).toBe(RUNS.length);
    const entries = await until('every tenant pod IP exported', async () => {
      const raw = await Promise.all(running.map((p) => etcd.get(keys.ip(CLUSTER, p.status!.podIP!)).string()));
      return raw.every((r) => r !== null) ? raw.map((r) => IpEntry.parse(JSON.parse(r))) : undefined;
    });
    expect(new Set(entries.map((e) => e.identity)).size).toBe(1);
    const identities = await tenantIdentities();
    expect(identities).toHaveLength(1);
    expect(identities[0]!.id).toBe(entries[0]!.identity);
    expect(identities[0]!.id >> 16).toBe(CLUSTER_ID);
    expect(identities[0]!.labels).toMatchObject({ 'k8s:app': 'report', 'k8s:io.kubernetes.pod.namespace': NS });
    expect(Object.keys(identities[0]!.labels).filter((k) => /controller-uid|job-name|job-completion-index/.test(k))).toEqual([]);
    const book = await bookkeeping(identities[0]!.id & 0xffff);
    expect(book.id).toMatch(/^[0-9a-f]{64}$/);
    expect(book.index).toEqual([keys.identityIndex(CLUSTER, book.id!)]);
  });

  it('once the pods are gone, the identity and its bookkeeping are released after the grace', async () => {
    const [identity] = await tenantIdentities();
    const localId = identity!.id & 0xffff;
    for (const pod of RUNS) await attacker.delete(`/api/v1/namespaces/${NS}/pods/${pod.metadata.name}`);
    await until('tenant pods gone', async () => ((await tenantPods()).length === 0 ? true : undefined), 90_000);
    await until('the identity released from the mesh etcd', async () => {
      const book = await bookkeeping(localId);
      return (await tenantIdentities()).length === 0 && book.id === null && book.index.length === 0 ? true : undefined;
    });
    const metrics = await admin.get<string>(skeinProxyPath('/metrics'));
    expect(metrics).toMatch(/^skein_identities_released_total [1-9]/m);
    expect(metrics).toMatch(/^skein_identity_ids_capacity 65280$/m);
    expect(metrics).not.toMatch(/^skein_identity_allocation_failures_total\{reason="exhausted"\} [1-9]/m);
  });

  it('releases a binding left over from before the restart that no pod uses', async () => {
    await until('the leftover binding released', async () => {
      const [index, id] = await Promise.all([etcd.get(keys.identityIndex(CLUSTER, STALE_HASH)).string(), etcd.get(keys.identityId(CLUSTER, STALE_ID)).string()]);
      return index === null && id === null ? true : undefined;
    });
  });

  it('keeps the identities of pods still running (skein-apiserver\'s own)', async () => {
    const own = (await admin.get<{ items: Pod[] }>('/api/v1/namespaces/skein-system/pods')).items[0]!;
    // Several grace periods after the restart, the running pod's identity and bookkeeping are still there.
    const entry = IpEntry.parse(JSON.parse((await etcd.get(keys.ip(CLUSTER, own.status!.podIP!)).string())!));
    expect((await exportedIdentities()).map((i) => i.id)).toContain(entry.identity);
    expect((await bookkeeping(entry.identity & 0xffff)).id).toMatch(/^[0-9a-f]{64}$/);
  });
});
