// Trust, tried as the attacker on the test bed (issue #10, holes 1, 3 and 7). Each test uses only the
// credentials that party really has, attempts the forbidden thing, and asserts the refusal and that nothing
// changed:
// - a node (its node certificate) asking the node CA for an identity in a namespace it has no pod in;
// - a peer cluster (its own CAs and Kubernetes API) claiming the local trust domain: at connect, in a link
//   update, through disconnect, and with a JWT-SVID its key signed for the local trust domain;
// - transport credentials (a peer's read identity, a node certificate) presented as workload identities, and
//   a workload SVID presented to the mesh etcd.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod } from '../../mesh/kube/objects.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeSecrets } from '../../mesh/kube/secrets.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { connectMeshEtcd } from '../../mesh/etcd.js';
import { NodeCaClient } from '../../mesh/node-ca/client.js';
import { keys } from '../../mesh/schema/keys.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { connect } from '../../deploy/cli/connect.js';
import { fetchStatus } from '../../deploy/cli/status.js';
import { WORKLOAD_CA_SECRET } from '../../mtls/cluster-ca.js';
import { signJwtSvid } from '../../mtls/svid.js';
import { createCA, newKeyAndCsr } from '../../mtls/x509.js';
import { remoteSecretName, REMOTE_LABEL } from '../../mesh/link-secrets.js';
import { workloadSocket } from '../../testbed/agents.js';
import { waitFor } from '../../testbed/daemon.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, exec, up } from '../../testbed/testbed.js';
import { clusterKubeconfig, clusterRest, meshEtcd, readyPods, tempStateDir } from './helpers.js';

const EAST = 'at-east';
const WEST = 'at-west';
const EAST_TD = `${EAST}.skein`;
const stateDir = tempStateDir('attack-trust');
let east: KubeRest;
let west: KubeRest;
let eastClient: Pod;

const clusterDir = (c: string) => statePaths(stateDir).cluster(c);
const meshUrl = (c: string) => readState(stateDir)!.clusters.find((x) => x.name === c)!.meshEtcdUrl;
const file = (...p: string[]) => readFileSync(join(...p), 'utf8');
const eastStatus = () => fetchStatus(clusterKubeconfig(stateDir, EAST));

/** The node CA as node-1 of east, with the node certificate the test bed gave that node's agent. */
async function asNode1(): Promise<NodeCaClient> {
  const etcd = meshEtcd(stateDir, EAST);
  const endpoint = (JSON.parse((await etcd.get(keys.nodeCa(EAST)).string())!) as { endpoint: string }).endpoint;
  etcd.close();
  const d = clusterDir(EAST);
  return new NodeCaClient(endpoint, { caPem: file(d, 'mesh-pki', 'ca.crt'), certPem: file(d, 'agent-1', 'node.crt'), keyPem: file(d, 'agent-1', 'node.key') });
}

/** ValidateJWTSVID on east's Workload API, from the east client pod. */
async function validateInEast(token: string, audience: string): Promise<{ spiffe_id?: string; code?: number; details?: string }> {
  const script = `
import { workloadApiClient, securityHeader } from '${REPO_ROOT}/dist/mtls/workload-api/client.js';
const c = workloadApiClient('${workloadSocket(clusterDir(EAST), 1)}');
c.ValidateJWTSVID({ audience: ${JSON.stringify(audience)}, svid: ${JSON.stringify(token)} }, securityHeader(), (err, res) => {
  console.log(JSON.stringify(err ? { code: err.code, details: err.details } : { spiffe_id: res.spiffe_id }));
  process.exit(0);
});`;
  const out = await exec({ stateDir, context: `skein-${EAST}`, pod: `default/${eastClient.metadata!.name}`, argv: ['node', '--input-type=module', '-e', script], stdio: 'pipe' });
  return JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { spiffe_id?: string; code?: number; details?: string };
}

async function apiserverRestarts(rest: KubeRest): Promise<number> {
  const pods = await rest.get<{ items: Pod[] }>('/api/v1/namespaces/skein-system/pods?labelSelector=app%3Dskein-apiserver');
  return pods.items.reduce((n, p) => n + (p.status?.containerStatuses?.reduce((m, c) => m + c.restartCount, 0) ?? 0), 0);
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 91 }, { name: WEST, id: 92 }], nodes: 1, echo: true });
  east = clusterRest(stateDir, EAST);
  west = clusterRest(stateDir, WEST);
  await connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
  eastClient = (await readyPods(east, 'app=client', 1))[0]!;
});

afterAll(async () => {
  await down(stateDir);
});

describe('a node asking the node CA for what is not its own', () => {
  it('cannot reach another namespace through path segments in the pod name, and the apiserver survives garbage', async () => {
    const node = await asNode1();
    const own = { namespace: 'default', name: eastClient.metadata!.name!, uid: eastClient.metadata!.uid! };
    const { csrDer } = await newKeyAndCsr();
    const restarts = await apiserverRestarts(east);
    try {
      // The attack: the SPIFFE ID used to come from the requested namespace, and `..` in the name led the
      // API path back to the attacker's own pod.
      for (const pod of [
        { ...own, namespace: 'victim', name: `../../default/pods/${own.name}` },
        { ...own, namespace: 'victim', name: `..%2f..%2fdefault%2fpods%2f${own.name}` },
        { ...own, namespace: 'default/../victim' },
        { ...own, name: `${own.name}/../${own.name}` },
        { ...own, uid: `${own.uid}/..` },
        { namespace: '', name: '', uid: '' },
      ]) {
        await expect(node.signX509(pod, csrDer), JSON.stringify(pod)).rejects.toMatchObject({ code: 3, details: expect.stringMatching(/^pod\.(namespace|name|uid): /) });
        await expect(node.signJwt(pod, ['aud']), JSON.stringify(pod)).rejects.toMatchObject({ code: 3 });
      }
      // Garbage: no pod at all, a CSR that is not one. Refused, not a crash.
      await expect(node.signX509(undefined as never, csrDer)).rejects.toMatchObject({ code: 3 });
      await expect(node.signX509(own, Buffer.from('not a csr'))).rejects.toMatchObject({ code: 3 });
      // Nothing changed: the same node still gets exactly its own pod's identity, from the fetched pod.
      expect((await node.signX509(own, csrDer)).spiffe_id).toBe(`spiffe://${EAST_TD}/ns/default/sa/default`);
      expect(await apiserverRestarts(east)).toBe(restarts);
    } finally {
      node.close();
    }
  });
});

describe('a peer claiming a trust domain that is not its own', () => {
  it("a JWT-SVID signed with the peer's workload CA key for the local trust domain fails ValidateJWTSVID", async () => {
    // West holds its own workload CA (its Secret, in its own cluster): the most a hostile peer has.
    const westCa = (await new KubeSecrets(west).get(WORKLOAD_CA_SECRET))!;
    const ca = { certPem: westCa['ca.crt']!, keyPem: westCa['ca.key']! };
    const forged = await signJwtSvid(ca, { spiffeId: `spiffe://${EAST_TD}/ns/default/sa/default`, audience: ['db'] });
    const r = await validateInEast(forged.token, 'db');
    expect(r.spiffe_id).toBeUndefined();
    expect(r.code).toBe(3);
    // The control: the same key signing for west's own trust domain validates (federation works).
    const honest = await signJwtSvid(ca, { spiffeId: `spiffe://${WEST}.skein/ns/default/sa/default`, audience: ['db'] });
    expect((await validateInEast(honest.token, 'db')).spiffe_id).toBe(`spiffe://${WEST}.skein/ns/default/sa/default`);
  });

  it('a link update claiming the local trust domain is refused and changes no bundle', async () => {
    const etcd = meshEtcd(stateDir, EAST);
    const secrets = new KubeSecrets(east);
    const good = (await secrets.get(remoteSecretName(WEST)))!;
    const bundles = async () => etcd.getAll().prefix(keys.bundlesPrefix(EAST)).strings();
    const before = await bundles();
    expect(Object.keys(before).sort()).toEqual([keys.bundle(EAST, EAST_TD), keys.bundle(EAST, `${WEST}.skein`)]);
    const evilCa = await createCA({ commonName: 'evil', ttlMs: 3600_000, uri: `spiffe://${EAST_TD}` });
    try {
      await secrets.put(remoteSecretName(WEST), { ...good, 'trust-domain': EAST_TD, 'bundle.crt': evilCa.certPem }, { [REMOTE_LABEL]: WEST });
      const s = await waitFor('east to refuse the link update', async () => {
        const st = await eastStatus();
        return st.refusedLinks?.some((r) => r.cluster === WEST) ? st : undefined;
      }, 30_000);
      expect(s.refusedLinks!.find((r) => r.cluster === WEST)!.reason).toContain(`claims trust domain ${EAST_TD}, which is this cluster's own`);
      expect(await bundles()).toEqual(before);
      // The running link keeps replicating on its last good state.
      expect(s.remotes.find((r) => r.cluster === WEST)).toMatchObject({ synced: true });
    } finally {
      await secrets.put(remoteSecretName(WEST), good, { [REMOTE_LABEL]: WEST });
      etcd.close();
    }
    await waitFor('the refusal to clear once the link is good again', async () => ((await eastStatus()).refusedLinks?.length ? undefined : true), 30_000);
  });

  it('connect refuses a peer whose workload CA names the other cluster’s trust domain, writing nothing', async () => {
    const westSecrets = new KubeSecrets(west);
    const real = (await westSecrets.get(WORKLOAD_CA_SECRET))!;
    const evil = await createCA({ commonName: 'evil', ttlMs: 3600_000, uri: `spiffe://${EAST_TD}` });
    const eastSecrets = new KubeSecrets(east);
    const linkBefore = await eastSecrets.get(remoteSecretName(WEST));
    // West's operator swaps its own workload CA for one naming east's trust domain, then connects again.
    await westSecrets.delete(WORKLOAD_CA_SECRET);
    await westSecrets.create(WORKLOAD_CA_SECRET, { 'ca.crt': evil.certPem, 'ca.key': evil.keyPem, 'trust-domain': EAST_TD });
    try {
      await expect(connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {})).rejects.toThrow(`is not valid for trust domain ${WEST}.skein: the CA certificate is not for trust domain ${WEST}.skein`);
      expect(await eastSecrets.get(remoteSecretName(WEST))).toEqual(linkBefore);
    } finally {
      await westSecrets.delete(WORKLOAD_CA_SECRET);
      await westSecrets.create(WORKLOAD_CA_SECRET, real);
    }
  });

  it("removing a link that claims the local trust domain never removes the local bundle", async () => {
    const etcd = meshEtcd(stateDir, EAST);
    const secrets = new KubeSecrets(east);
    const good = (await secrets.get(remoteSecretName(WEST)))!;
    const own = await etcd.get(keys.bundle(EAST, EAST_TD)).string();
    try {
      // A link Secret pointed at east's own trust domain, then deleted (what disconnect does on this side).
      await secrets.put(remoteSecretName(WEST), { ...good, 'trust-domain': EAST_TD }, { [REMOTE_LABEL]: WEST });
      await waitFor('east to refuse the link update', async () => ((await eastStatus()).refusedLinks?.some((r) => r.cluster === WEST) ? true : undefined), 30_000);
      await secrets.delete(remoteSecretName(WEST));
      // West's bundle goes with its link; east's own stays.
      await waitFor("west's bundle to go with the link", async () => ((await etcd.get(keys.bundle(EAST, `${WEST}.skein`)).string()) === null ? true : undefined), 30_000);
      expect((await eastStatus()).remotes.some((r) => r.cluster === WEST)).toBe(false);
      expect(await etcd.get(keys.bundle(EAST, EAST_TD)).string()).toBe(own);
      // Workloads in east still get their identity with east's bundle.
      const status: ApiserverStatus = await eastStatus();
      expect(status.trustDomain).toBe(EAST_TD);
    } finally {
      etcd.close();
      await connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
    }
  });
});

describe('transport credentials are not workload identities, and SVIDs do not open the mesh etcd', () => {
  it("east's read identity for west, west's node certificate and mesh etcd certificate do not verify under west's trust bundle", async () => {
    const etcd = meshEtcd(stateDir, EAST);
    const westBundle = new X509Certificate((JSON.parse((await etcd.get(keys.bundle(EAST, `${WEST}.skein`)).string())!) as { caPem: string }).caPem);
    etcd.close();
    const link = (await new KubeSecrets(east).get(remoteSecretName(WEST)))!;
    const transport = {
      'east reading west': link['tls.crt']!,
      'west node-1': file(clusterDir(WEST), 'agent-1', 'node.crt'),
      'west mesh etcd': file(clusterDir(WEST), 'mesh-pki', 'server.crt'),
    };
    for (const [what, pem] of Object.entries(transport)) {
      const cert = new X509Certificate(pem);
      expect(cert.verify(westBundle.publicKey), what).toBe(false);
      expect(cert.checkIssued(westBundle), what).toBe(false);
      expect(cert.subjectAltName ?? '', what).not.toContain('URI:spiffe://');
    }
  });

  it('a workload SVID presented to the mesh etcd is refused', async () => {
    const node = await asNode1();
    const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
    const svid = await node.signX509({ namespace: 'default', name: eastClient.metadata!.name!, uid: eastClient.metadata!.uid! }, csrDer);
    node.close();
    const certPem = new X509Certificate(svid.certificate).toString();
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${keyPkcs8Der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`;
    const client = connectMeshEtcd({ endpoints: [meshUrl(EAST)], tls: { caPem: file(clusterDir(EAST), 'mesh-pki', 'ca.crt'), certPem, keyPem }, callTimeoutMs: 3_000, serverName: meshEtcdServerName(EAST) });
    try {
      await expect(client.get(keys.bundle(EAST, EAST_TD)).string()).rejects.toThrow();
      await expect(client.put(keys.agent(EAST, 'evil')).value('{}')).rejects.toThrow();
    } finally {
      client.close();
    }
    const root = meshEtcd(stateDir, EAST);
    expect(await root.get(keys.agent(EAST, 'evil')).string()).toBeNull();
    root.close();
  });
});
