// A Helm-installed agent's node identity on a real kube-apiserver (the test bed's): the chart's own RBAC and
// service accounts are applied, skein-apiserver runs with --sign-node-requests (as the chart starts it), and
// the agent's init step (dist/datapath/agent/node-identity.js) runs with a token bound to an agent pod on
// node 0, as the kubelet gives it. It gets node-<node 0>, which opens the mesh etcd as that node; the same
// token asking for node 1's identity is denied, with the reason.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { connectMeshEtcd } from '../../mesh/etcd.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import type { Pod } from '../../mesh/kube/objects.js';
import { keys } from '../../mesh/schema/keys.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { applyManifest } from '../../testbed/manifests.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { clusterKubeconfig, clusterRest, rollOutApiserverArgs, tempStateDir } from './helpers.js';

const CLUSTER = 'nid';
const stateDir = tempStateDir('node-identity');
const work = mkdtempSync(join(tmpdir(), 'skein-node-identity-'));
let rest: KubeRest;
let nodes: string[] = [];
let agentKubeconfig = '';

const run = promisify(execFile);
const initStep = (node: string, out: string) => run(process.execPath, [join(REPO_ROOT, 'dist/datapath/agent/node-identity.js'), `--node-name=${node}`, `--out=${out}`, `--kubeconfig=${agentKubeconfig}`, '--timeout=60'], { encoding: 'utf8' });

/** The chart as helm renders it (the given templates only, or all). */
async function renderChart(args: string[]): Promise<KubernetesObject[]> {
  const helm = (await run('bash', [join(REPO_ROOT, 'deploy/scripts/build-tools.sh'), 'helm'], { encoding: 'utf8' })).stdout.trim();
  const chart = join(REPO_ROOT, 'deploy/helm/skein');
  const { stdout } = await run(helm, ['template', 'skein', chart, '-n', 'skein-system', '--set', `cluster.name=${CLUSTER}`, ...args], { encoding: 'utf8' });
  return parseAllDocuments(stdout).map((d) => d.toJS() as KubernetesObject).filter(Boolean);
}
const chartRbac = () => renderChart(['--show-only', 'templates/serviceaccounts.yaml', '--show-only', 'templates/rbac.yaml']);

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: 84 }], nodes: 2, echo: false });
  rest = clusterRest(stateDir, CLUSTER);
  await applyManifest(clusterKubeconfig(stateDir, CLUSTER), await chartRbac());
  await rollOutApiserverArgs(rest, ['--sign-node-requests']);
  nodes = (await rest.get<{ items: { metadata: { name: string } }[] }>('/api/v1/nodes')).items.map((n) => n.metadata.name).sort();
  // An agent pod on node 0, as the DaemonSet would place it; its token is what the kubelet would mount.
  await rest.post('/api/v1/namespaces/skein-system/pods', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'skein-agent-test', labels: { app: 'skein-agent' } },
    spec: { serviceAccountName: 'skein-agent', nodeName: nodes[0], terminationGracePeriodSeconds: 1, containers: [{ name: 'agent', image: 'ghcr.io/skein-mesh/skein-client:0.1.0', args: ['idle'] }] },
  });
  const pod = await rest.get<Pod>('/api/v1/namespaces/skein-system/pods/skein-agent-test');
  const token = await rest.post<{ status: { token: string } }>('/api/v1/namespaces/skein-system/serviceaccounts/skein-agent/token', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name, uid: pod.metadata!.uid } },
  });
  const admin = clusterKubeconfig(stateDir, CLUSTER).getCurrentCluster()!;
  agentKubeconfig = join(work, 'agent.kubeconfig');
  writeFileSync(
    agentKubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: admin.server, 'certificate-authority-data': admin.caData ?? Buffer.from(readFileSync(admin.caFile!)).toString('base64') } }],
      users: [{ name: 'agent', user: { token: token.status.token } }],
      contexts: [{ name: 'agent', context: { cluster: 'c', user: 'agent' } }],
      'current-context': 'agent',
    }),
  );
});

afterAll(async () => {
  await down(stateDir);
  rmSync(work, { recursive: true, force: true });
});

describe('node identity from a CertificateSigningRequest', () => {
  it('gives the agent pod of node 0 the identity node-<node 0>, which opens the mesh etcd as that node', async () => {
    const out = join(work, 'node0');
    const { stdout } = await initStep(nodes[0]!, out);
    expect(stdout).toContain(`node identity node-${nodes[0]} written`);
    const ca = (await rest.get<{ data: Record<string, string> }>('/api/v1/namespaces/skein-system/secrets/skein-ca')).data['ca.crt']!;
    expect(readFileSync(join(out, 'ca.crt'), 'utf8').trim()).toBe(Buffer.from(ca, 'base64').toString('utf8').trim());
    const etcd = connectMeshEtcd({ endpoints: [readState(stateDir)!.clusters[0]!.meshEtcdUrl], caFile: join(out, 'ca.crt'), certFile: join(out, 'node.crt'), keyFile: join(out, 'node.key'), serverName: meshEtcdServerName(CLUSTER) });
    try {
      // The node CA endpoint is readable by node users only (apiserver/mesh-auth.ts).
      expect(await etcd.get(keys.nodeCa(CLUSTER)).string()).toMatch(/endpoint/);
      // Its own agent view is writable; another node's is not.
      await etcd.put(keys.agent(CLUSTER, nodes[0]!)).value('{}');
      await expect(etcd.put(keys.agent(CLUSTER, nodes[1]!)).value('{}')).rejects.toThrow(/permission denied/);
    } finally {
      etcd.close();
    }
  });

  it('renders a chart this kube-apiserver accepts whole (dry-run create), with the kind values too', async () => {
    // A fresh copy beside the test bed's own skein-apiserver: namespaced objects in a namespace of their own,
    // cluster-scoped ones renamed; the API validates them as it would a first install.
    const ns = 'skein-chart-dryrun';
    await rest.post('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    const api = KubernetesObjectApi.makeApiClient(clusterKubeconfig(stateDir, CLUSTER));
    for (const values of [[], ['-f', join(REPO_ROOT, 'deploy/kind/values.yaml'), '--set', 'cluster.podCidr=10.1.0.0/16']]) {
      const objects = await renderChart(values);
      expect(objects.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'DaemonSet', 'Deployment', 'Role', 'Role', 'RoleBinding', 'RoleBinding', 'Service', 'Service', 'Service', 'ServiceAccount', 'ServiceAccount']);
      for (const o of objects) {
        const copy = { ...o, metadata: o.metadata?.namespace ? { ...o.metadata, namespace: ns } : { ...o.metadata, name: `${o.metadata?.name}-dryrun` } };
        await api.create(copy, undefined, 'All').catch((err: { body?: unknown }) => {
          throw new Error(`${o.kind}/${o.metadata?.name} refused: ${JSON.stringify(err.body)}`);
        });
      }
    }
  });

  it('denies the same token asking for node 1, saying why', async () => {
    const err = await initStep(nodes[1]!, join(work, 'node1')).then(
      () => undefined,
      (e: { stderr: string }) => e.stderr,
    );
    expect(err).toMatch(new RegExp(`denied: the certificate request names "CN=node-${nodes[1]}", not CN=node-${nodes[0]}`));
  });
});
