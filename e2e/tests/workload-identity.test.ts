// Issue 6: workload identities across clusters. A go-spiffe workload (the SPIFFE project's library, built
// from its Go module) in an east pod gets its X.509-SVID from its node's agent and calls a go-spiffe server
// in a west pod over mTLS; each side authorizes the other by SPIFFE ID through the federated bundles
// `skein connect` exchanged. Refusals: no security header, an unknown caller, a pod asking another node's
// agent, a tampered bundle. The connection survives SVID rotation; after disconnect it fails on trust.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeNode, Pod } from '../../mesh/kube/objects.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { keys } from '../../mesh/schema/keys.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { connectMeshEtcd } from '../../mesh/etcd.js';
import { NodeCaClient } from '../../mesh/node-ca/client.js';
import { newKeyAndCsr } from '../../mtls/x509.js';
import { connect, disconnect } from '../../deploy/cli/connect.js';
import { waitFor } from '../../testbed/daemon.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState } from '../../testbed/state.js';
import { workloadSocket } from '../../testbed/agents.js';
import { statePaths } from '../../testbed/state.js';
import { down, exec, up } from '../../testbed/testbed.js';
import { rollOutApiserverArgs, clusterKubeconfig, clusterRest, idlePodAs, meshEtcd, podIp, readyPods, tempStateDir, workloadProbe } from './helpers.js';

const EAST = 'wi-east';
const WEST = 'wi-west';
const ID = (cluster: string) => `spiffe://${cluster}.skein/ns/default/sa/default`;
const stateDir = tempStateDir('workload-identity');
const peer = execFileSync('bash', [join(REPO_ROOT, 'e2e', 'spiffe-peer', 'build.sh')], { encoding: 'utf8' }).trim();
let east: KubeRest;
let eastClient: Pod;
let westUrl = '';

const nodeIndex = (p: Pod) => Number(/-node-(\d+)$/.exec(p.spec!.nodeName!)![1]);
const inPod = (cluster: string, pod: Pod, argv: string[]) => exec({ stateDir, context: `skein-${cluster}`, pod: `default/${pod.metadata!.name}`, argv, stdio: 'pipe' });
const lines = (out: string) => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { answer?: { client: string; server: string }; error?: string; clientSerial: string });
const callWest = (extra: string[] = []) => inPod(EAST, eastClient, [peer, 'get', '-url', westUrl, '-server', ID(WEST), ...extra]);

const probe = (pod: Pod | undefined, socket: string, header = true) => workloadProbe(stateDir, EAST, pod, socket, header);
const socketOf = (cluster: string, node: number) => workloadSocket(statePaths(stateDir).cluster(cluster), node);
const agentUrl = (cluster: string, node: number) => readState(stateDir)!.clusters.find((c) => c.name === cluster)!.agents[node - 1]!;

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 81 }, { name: WEST, id: 82 }], nodes: 2, echo: true });
  east = clusterRest(stateDir, EAST);
  // Short-lived SVIDs in east, so rotation happens within the test (renewed at half-life: 10 s).
  await rollOutApiserverArgs(east, ['--svid-ttl=20']);
  await connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
  eastClient = (await readyPods(east, 'app=client', 1))[0]!;
  const westClient = (await readyPods(clusterRest(stateDir, WEST), 'app=client', 1))[0]!;
  westUrl = `https://${podIp(westClient)}:8443/`;
  // The west server runs for the rest of the file (down() ends it with everything else).
  void inPod(WEST, westClient, [peer, 'serve', '-addr', ':8443', '-allow', ID(EAST)]);
});

afterAll(async () => {
  await down(stateDir);
});

describe('workload identities across clusters', () => {
  it('a go-spiffe client in east gets its SVID and calls a go-spiffe server in west over mTLS, each authorized by SPIFFE ID', async () => {
    const r = await waitFor('an mTLS answer from west', async () => {
      const out = await callWest();
      return out.code === 0 ? lines(out.stdout) : undefined;
    }, 60_000);
    expect(r[0]!.answer).toMatchObject({ client: ID(EAST), server: ID(WEST) });
  });

  it('a new pod’s first FetchX509SVID is answered with the SVID its agent signed when the pod was bound, without calling the node CA', async () => {
    const pod = await idlePodAs(east, 'early');
    type Held = { identity: string; spiffeId?: string; serial?: string; issuedAtMs?: number; pods: number };
    type Workload = { identities: Held[]; signCalls: number; servedFromCache: number; servedAfterSigning: number; preIssued: number };
    const agent = async () => (await (await fetch(`${agentUrl(EAST, nodeIndex(pod))}/v1/workload`)).json()) as Workload;
    const before = await agent();
    const held = before.identities.find((i) => i.identity === 'default/early');
    // Held by the time the pod is ready, before anything in it asked.
    expect(held).toMatchObject({ spiffeId: `spiffe://${EAST}.skein/ns/default/sa/early`, pods: 1 });
    const r = await probe(pod, `unix://${socketOf(EAST, nodeIndex(pod))}`);
    expect(r).toMatchObject({ ok: `spiffe://${EAST}.skein/ns/default/sa/early`, serial: held!.serial });
    expect(held!.issuedAtMs).toBeLessThan(r.at!);
    const after = await agent();
    expect(after.signCalls).toBe(before.signCalls); // the node CA was not asked on that path
    expect(after.servedFromCache).toBe(before.servedFromCache + 1);
    expect(after.servedAfterSigning).toBe(before.servedAfterSigning);
    // Its last pod gone, the identity's SVID is dropped from the node.
    await east.delete('/api/v1/namespaces/default/pods/early', { gracePeriodSeconds: 0 });
    await waitFor('the agent to drop default/early', async () => ((await agent()).identities.some((i) => i.identity === 'default/early') ? undefined : true), 30_000);
  });

  it('refuses a request without the security header, an unknown caller, and a pod asking another node’s agent', async () => {
    const own = `unix://${socketOf(EAST, nodeIndex(eastClient))}`;
    const other = `unix://${socketOf(EAST, nodeIndex(eastClient) === 1 ? 2 : 1)}`;
    expect(await probe(eastClient, own)).toMatchObject({ ok: ID(EAST) });
    expect(await probe(eastClient, own, false)).toMatchObject({ code: 3, details: expect.stringContaining('workload.spiffe.io') });
    expect(await probe(undefined, own)).toMatchObject({ code: 7 }); // this test process: in no pod
    expect(await probe(eastClient, other)).toMatchObject({ code: 7, details: expect.stringContaining('not a pod this node serves') });
  });

  it("a node's identity reads only what its datapath and Workload API need and writes only its own view", async () => {
    const dir = join(statePaths(stateDir).cluster(EAST), 'agent-1');
    const state = readState(stateDir)!.clusters.find((c) => c.name === EAST)!;
    const nodes = (await east.get<{ items: KubeNode[] }>('/api/v1/nodes')).items.map((n) => n.metadata!.name!).sort();
    const [self, other] = [nodes.find((n) => n.endsWith('-node-1'))!, nodes.find((n) => n.endsWith('-node-2'))!];
    const agentEtcd = connectMeshEtcd({ endpoints: [state.meshEtcdUrl], caFile: join(statePaths(stateDir).cluster(EAST), 'mesh-pki', 'ca.crt'), certFile: join(dir, 'node.crt'), keyFile: join(dir, 'node.key'), serverName: meshEtcdServerName(EAST) });
    const root = meshEtcd(stateDir, EAST);
    try {
      // What it needs: bundles, the node CA endpoint, services, remotes' caches; and its own view.
      expect(await agentEtcd.get(keys.bundle(EAST, `${EAST}.skein`)).string()).toContain('BEGIN CERTIFICATE');
      expect(await agentEtcd.get(keys.nodeCa(EAST)).string()).toContain('endpoint');
      expect((await agentEtcd.getAll().prefix(`/skein/v1/cache/${WEST}/services/`).keys()).length).toBeGreaterThan(0);
      // The lease-bound view it publishes is its own key; rewriting it (without the lease) is allowed too.
      await waitFor('node-1 to publish its view', async () => ((await root.get(keys.agent(EAST, self)).string()) ? true : undefined), 30_000);
      // Everything else, as that node: peers' credentials (private keys), allocation bookkeeping, another
      // node's view, the export, bundles.
      const before = await root.getAll().prefix('/skein/v1/').strings();
      await expect(agentEtcd.getAll().prefix('/skein/v1/credentials/').strings()).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.getAll().prefix('/skein/v1/').keys()).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.getAll().prefix(`/skein/v1/local/${EAST}/identity-index/`).keys()).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.put(keys.agent(EAST, other)).value('{}')).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.delete().key(keys.agent(EAST, other))).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.put(keys.agent(EAST, 'probe')).value('{}')).rejects.toThrow(/permission denied/);
      // Its frontend shards are its own too: not another node's, nor those of a node whose name only starts like its own.
      await expect(agentEtcd.put(keys.agentFrontends(EAST, other, 0)).value('{}')).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.delete().key(keys.agentFrontends(EAST, other, 0))).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.put(keys.agentFrontends(EAST, `${self}0`, 0)).value('{}')).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.put(keys.bundle(EAST, 'evil.skein')).value('{}')).rejects.toThrow(/permission denied/);
      await expect(agentEtcd.put(`/skein/v1/export/${EAST}/services/default/evil`).value('{}')).rejects.toThrow(/permission denied/);
      const after = await root.getAll().prefix('/skein/v1/').strings();
      const stable = (m: Record<string, string>) => Object.keys(m).filter((k) => !k.includes('/heartbeat') && !k.includes('/agents/') && !k.includes('/agent-frontends/') && !k.includes('/sync/')).sort();
      expect(stable(after)).toEqual(stable(before));
    } finally {
      agentEtcd.close();
      root.close();
    }
  });

  it('the node CA signs only for pods bound to the asking node', async () => {
    const etcd = meshEtcd(stateDir, EAST);
    const endpoint = (JSON.parse((await etcd.get(keys.nodeCa(EAST)).string())!) as { endpoint: string }).endpoint;
    etcd.close();
    const clusterDir = statePaths(stateDir).cluster(EAST);
    const asNode = (n: number) =>
      new NodeCaClient(endpoint, { caPem: readFileSync(join(clusterDir, 'mesh-pki', 'ca.crt'), 'utf8'), certPem: readFileSync(join(clusterDir, `agent-${n}`, 'node.crt'), 'utf8'), keyPem: readFileSync(join(clusterDir, `agent-${n}`, 'node.key'), 'utf8') });
    const pod = { namespace: 'default', name: eastClient.metadata!.name!, uid: eastClient.metadata!.uid! };
    const { csrDer } = await newKeyAndCsr();
    const own = asNode(nodeIndex(eastClient));
    const other = asNode(nodeIndex(eastClient) === 1 ? 2 : 1);
    try {
      expect((await own.signX509(pod, csrDer)).spiffe_id).toBe(ID(EAST));
      await expect(other.signX509(pod, csrDer)).rejects.toMatchObject({ code: 7, details: expect.stringContaining(`is bound to ${eastClient.spec!.nodeName}`) });
      await expect(own.signX509({ ...pod, uid: '00000000-0000-0000-0000-000000000000' }, csrDer)).rejects.toMatchObject({ code: 7, details: expect.stringContaining('it was replaced') });
    } finally {
      own.close();
      other.close();
    }
  });

  it('refuses a tampered trust bundle and keeps serving the last good one', async () => {
    const etcd = meshEtcd(stateDir, EAST);
    const key = keys.bundle(EAST, `${WEST}.skein`);
    const good = (await etcd.get(key).string())!;
    const bundle = JSON.parse(good) as { caPem: string };
    const b64 = bundle.caPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    const der = Buffer.from(b64, 'base64');
    der[der.length - 20]! ^= 0xff; // inside the CA's signature
    const tampered = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
    try {
      await etcd.put(key).value(JSON.stringify({ ...bundle, caPem: tampered }));
      await waitFor('the agent to refuse the bundle', async () => {
        const s = (await (await fetch(`${agentUrl(EAST, nodeIndex(eastClient))}/v1/workload`)).json()) as { refusedBundles: number };
        return s.refusedBundles > 0 ? true : undefined;
      }, 15_000);
      const out = await callWest();
      expect(out.code).toBe(0);
      expect(lines(out.stdout)[0]!.answer?.server).toBe(ID(WEST));
    } finally {
      await etcd.put(key).value(good);
      etcd.close();
    }
  });

  it('keeps working across SVID rotation on one connection', async () => {
    // Three requests 8 s apart on one keep-alive connection; the client's 20 s SVID renews every 10 s.
    const out = await callWest(['-count', '3', '-interval', '8s']);
    const r = lines(out.stdout);
    expect(r.map((x) => x.error)).toEqual([undefined, undefined, undefined]);
    expect(new Set(r.map((x) => x.clientSerial)).size).toBeGreaterThan(1);
  });

  it('after disconnect the same request fails on trust', async () => {
    await disconnect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
    const r = await waitFor('east to stop trusting west', async () => {
      const out = await callWest();
      return out.code !== 0 ? lines(out.stdout) : undefined;
    }, 30_000);
    expect(r[0]!.error).toMatch(/no X.509 bundle for trust domain "wi-west.skein"|certificate/);
  });
});
