// Issue 15: every node agent's transport identity (node-<node>, mesh CA) rotates, as kubelet rotates its client
// certificate. skein-apiserver runs with --node-identity-ttl=20 and node 1's agent is restarted with a 20 s
// identity; it renews at half-life over its node-CA channel (a new key each time) while its etcd watches keep
// delivering service changes to the datapath, its lease keeps its view, and the channel keeps signing SVIDs.
// Once the first certificate has expired, the mesh etcd restarts: every connection the agent had is gone and
// its new handshakes must present a renewed certificate, or it stops following the mesh.
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Etcd3 } from 'etcd3';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { keys } from '../../mesh/schema/keys.js';
import { issueNodeIdentity } from '../../mtls/mesh-identities.js';
import { startAgent, workloadSocket } from '../../testbed/agents.js';
import { destroyCgroup } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { etcdCgroup, restartEtcd } from '../../testbed/etcd.js';
import { meshPki } from '../../testbed/skein-apiserver.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { clusterRest, idlePodAs, meshEtcd, readyPods, rollOutApiserverArgs, tempStateDir, workloadProbe } from './helpers.js';

const CLUSTER = 'nir';
const TTL_S = 20;
const stateDir = tempStateDir('node-identity-rotation');
let rest: KubeRest;
let root: Etcd3;
let agentUrl = '';
let node = '';
let firstNotAfter = 0;
/** The killed agent's view lease: it outlives the agent by its TTL, holding the view key until the new agent writes it. */
let oldLease: string | undefined;

const clusterDir = () => statePaths(stateDir).cluster(CLUSTER);
const identity = async () => (await (await fetch(`${agentUrl}/v1/node-identity`)).json()) as { serial: string; notAfter: string; renewals: number; failures: number };
const programmedIps = async () => ((await (await fetch(`${agentUrl}/v1/programmed`)).json()) as { frontends: { frontend: { ip: string } }[] }).frontends.map((f) => f.frontend.ip);

/** A new global service; resolves once node 1's agent programmed its ClusterIP (apiserver → mesh etcd → the agent's watch → BPF). */
async function serviceReachesAgent(name: string): Promise<void> {
  const svc = await rest.post<{ spec: { clusterIP: string } }>('/api/v1/namespaces/default/services', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, annotations: { 'skein.io/global': 'true' } },
    spec: { selector: { app: 'echo' }, ports: [{ port: 8080, targetPort: 8080 }] },
  });
  await waitFor(`${name} (${svc.spec.clusterIP}) programmed by the agent`, async () => ((await programmedIps()).includes(svc.spec.clusterIP) ? true : undefined), 30_000);
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: 87 }], nodes: 1, echo: true });
  rest = clusterRest(stateDir, CLUSTER);
  root = meshEtcd(stateDir, CLUSTER);
  await rollOutApiserverArgs(rest, [`--node-identity-ttl=${TTL_S}`]);
  node = (await rest.get<{ items: { metadata: { name: string } }[] }>('/api/v1/nodes')).items[0]!.metadata.name;
  // Node 1's agent again, from a 20 s identity (the test bed's is a year): as the installer would have issued it under this policy.
  const state = readState(stateDir)!;
  const cluster = state.clusters[0]!;
  const controlCgroup = join(state.cgroupRoot, 'control', CLUSTER);
  oldLease = (await root.get(keys.agent(CLUSTER, node)).exec()).kvs[0]?.lease;
  await destroyCgroup(join(controlCgroup, 'agent-1'));
  const pki = meshPki(clusterDir());
  const first = await issueNodeIdentity({ cluster: CLUSTER, mesh: { certPem: readFileSync(pki.ca, 'utf8'), keyPem: readFileSync(pki.caKey, 'utf8') } }, node, TTL_S * 1000);
  firstNotAfter = Date.parse(new X509Certificate(first.certPem).validTo);
  writeFileSync(join(clusterDir(), 'agent-1', 'node.crt'), first.certPem);
  writeFileSync(join(clusterDir(), 'agent-1', 'node.key'), first.keyPem, { mode: 0o600 });
  agentUrl = await startAgent({ tag: state.tag, cluster, index: 1, clusterDir: clusterDir(), logDir: statePaths(stateDir).logs(CLUSTER), controlCgroup, cgroupRoot: state.cgroupRoot, meshEtcdUrl: cluster.meshEtcdUrl });
  await readyPods(rest, 'app=echo', 2);
});

afterAll(async () => {
  root?.close();
  await down(stateDir);
});

describe('node identity rotation', () => {
  it('renews at half-life while watches, the lease and the node-CA channel carry on, and after the first certificate expired new handshakes use the renewed one', async () => {
    const socket = `unix://${workloadSocket(clusterDir(), 1)}`;
    const viewLease = async () => (await root.get(keys.agent(CLUSTER, node)).exec()).kvs[0]?.lease;
    await waitFor('the new agent\'s view on its lease', async () => {
      const l = await viewLease();
      return l && l !== oldLease ? l : undefined;
    }, 60_000);
    const lease = await viewLease();
    const serials = new Set<string>([(await identity()).serial]);
    for (let round = 1; serials.size < 3; round++) {
      const before = (await identity()).renewals;
      const renewed = await waitFor(`renewal ${round}`, async () => {
        const id = await identity();
        return id.renewals > before ? id : undefined;
      }, TTL_S * 1000);
      serials.add(renewed.serial);
      // The file the agent restarts from is the certificate it presents now.
      expect(new X509Certificate(readFileSync(join(clusterDir(), 'agent-1', 'node.crt'))).serialNumber).toBe(renewed.serial);
      // (a) its etcd watch still delivers: a new service reaches the BPF datapath.
      await serviceReachesAgent(`rot-${round}`);
      // (b) its node-CA channel still signs: a pod of a new identity gets its SVID (pre-issued over that channel).
      const pod = await idlePodAs(rest, `rot-${round}`);
      expect(await workloadProbe(stateDir, CLUSTER, pod, socket)).toMatchObject({ ok: `spiffe://${CLUSTER}.skein/ns/default/sa/rot-${round}` });
      // Its view stayed on the same lease: no reconnect, no new session.
      expect(await viewLease()).toBe(lease);
    }
    const now = await identity();
    expect(now.failures).toBe(0);
    expect(Date.parse(now.notAfter) - Date.now()).toBeLessThanOrEqual(TTL_S * 1000);
    // The expiry in /metrics: this certificate's, or a later one's if it renewed meanwhile.
    expect(Number((await (await fetch(`${agentUrl}/metrics`)).text()).match(/^skein_node_identity_expiry_seconds (\S+)$/m)?.[1]) * 1000).toBeGreaterThanOrEqual(Date.parse(now.notAfter));

    // (c) The first certificate has expired; the mesh etcd restarts, so every connection of the agent is new.
    await new Promise((r) => setTimeout(r, Math.max(0, firstNotAfter - Date.now() + 1_000)));
    const argv = meshPki(clusterDir()).argv;
    await destroyCgroup(etcdCgroup(argv));
    await restartEtcd(argv);
    root.close();
    root = meshEtcd(stateDir, CLUSTER);
    await serviceReachesAgent('rot-after-restart');
    const pod = await idlePodAs(rest, 'rot-after');
    expect(await workloadProbe(stateDir, CLUSTER, pod, socket)).toMatchObject({ ok: `spiffe://${CLUSTER}.skein/ns/default/sa/rot-after` });
    await waitFor('the agent\'s view back on a lease', async () => ((await viewLease()) ? true : undefined), 30_000);
    // Still the same agent process (its renewals kept counting), and its identity still renews.
    const later = await identity();
    expect(later.renewals).toBeGreaterThanOrEqual(now.renewals);
    await waitFor('a renewal after the etcd restart', async () => ((await identity()).renewals > later.renewals ? true : undefined), TTL_S * 1000);
  });
});
