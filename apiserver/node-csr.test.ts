// Node identities through Kubernetes CertificateSigningRequests, decided as the apiserver decides them,
// mostly from the attacker's side: another service account, another node's name, a token not bound to a
// pod, a reused pod name, a forged request, extra usages.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { KubeApiError, type KubeRest } from '../mesh/kube/rest.js';
import type { CertificateSigningRequest, Pod } from '../mesh/kube/objects.js';
import { agentUsername, NODE_SIGNER, splitChain, TOKEN_EXTRA } from '../mesh/node-identity.js';
import { nodeIdentityRequest, nodeUri, type MeshCA } from '../mtls/mesh-identities.js';
import { createCA } from '../mtls/x509.js';
import { NodeCsrSigner } from './node-csr.js';

const CLUSTER = 'east';
let ca: MeshCA;
let request: { keyPem: string; csrPem: string };

const agentPod = (name: string, node: string, uid: string): Pod => ({ metadata: { name, namespace: 'skein-system', uid }, spec: { nodeName: node, serviceAccountName: 'skein-agent', containers: [] } });

function api(pods: Pod[], nodes: string[]) {
  const puts: { path: string; body: CertificateSigningRequest }[] = [];
  const rest = {
    get: vi.fn(async (path: string) => {
      const pod = pods.find((p) => path === `/api/v1/namespaces/skein-system/pods/${p.metadata!.name}`);
      if (pod) return pod;
      const node = nodes.find((n) => path === `/api/v1/nodes/${n}`);
      if (node) return { metadata: { name: node } };
      throw new KubeApiError(404, 'NotFound', `GET ${path}: 404`);
    }),
    put: vi.fn(async (path: string, body: CertificateSigningRequest) => {
      puts.push({ path, body });
      return body;
    }),
    list: vi.fn(),
  };
  return { rest: rest as unknown as Pick<KubeRest, 'get' | 'put' | 'list'>, puts };
}

function csr(o: { username?: string; node?: string; pod?: string; uid?: string; csrPem?: string; usages?: string[]; status?: CertificateSigningRequest['status'] } = {}): CertificateSigningRequest {
  const extra: Record<string, string[]> = {};
  if (o.node !== '') extra[TOKEN_EXTRA.nodeName] = [o.node ?? 'n1'];
  if (o.pod !== '') extra[TOKEN_EXTRA.podName] = [o.pod ?? 'skein-agent-abcde'];
  if (o.uid !== '') extra[TOKEN_EXTRA.podUid] = [o.uid ?? 'uid-1'];
  return {
    metadata: { name: 'skein-node-n1-xyz' },
    spec: { signerName: NODE_SIGNER, username: o.username ?? agentUsername(), extra, usages: o.usages ?? ['digital signature', 'client auth'], request: Buffer.from(o.csrPem ?? request.csrPem).toString('base64') },
    status: o.status,
  };
}

async function decide(c: CertificateSigningRequest, pods = [agentPod('skein-agent-abcde', 'n1', 'uid-1')], nodes = ['n1', 'n2']) {
  const { rest, puts } = api(pods, nodes);
  const log = { info: vi.fn(), warn: vi.fn() };
  await new NodeCsrSigner({ kc: undefined as never, rest, ca, log }).handle(c);
  return { puts, log };
}

const denial = (puts: { path: string; body: CertificateSigningRequest }[]) => {
  expect(puts).toHaveLength(1);
  expect(puts[0]!.path).toMatch(/\/approval$/);
  const c = puts[0]!.body.status!.conditions!.at(-1)!;
  expect(c).toMatchObject({ type: 'Denied', status: 'True', reason: 'SkeinNodeIdentityRefused' });
  return c.message!;
};

describe('node identity requests', () => {
  beforeAll(async () => {
    ca = { cluster: CLUSTER, mesh: await createCA({ commonName: 'skein east mesh CA', ttlMs: 3600_000 }) };
    request = await nodeIdentityRequest('n1');
  });

  it('certifies the agent pod of node n1 as node-n1, for the key it made, with the mesh CA after it', async () => {
    const { puts } = await decide(csr());
    expect(puts.map((p) => p.path)).toEqual(['/apis/certificates.k8s.io/v1/certificatesigningrequests/skein-node-n1-xyz/approval', '/apis/certificates.k8s.io/v1/certificatesigningrequests/skein-node-n1-xyz/status']);
    expect(puts[0]!.body.status!.conditions!.at(-1)).toMatchObject({ type: 'Approved', status: 'True' });
    const chain = Buffer.from(puts[1]!.body.status!.certificate!, 'base64').toString('utf8');
    // As kube-apiserver's validation reads PEM: every block on lines of its own.
    expect(chain).toMatch(/^(-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----\n){2}$/);
    const { leafPem, caPem } = splitChain(chain);
    expect(caPem.trim()).toBe(ca.mesh.certPem.trim());
    const leaf = new X509Certificate(leafPem);
    expect(leaf.verify(new X509Certificate(ca.mesh.certPem).publicKey)).toBe(true);
    expect(leaf.subject).toBe('CN=node-n1');
    expect(leaf.subjectAltName).toBe(`URI:${nodeUri(CLUSTER, 'n1')}`);
    expect(leaf.checkPrivateKey(createPrivateKey(request.keyPem))).toBe(true);
  });

  it('denies another service account, even one that names a real node', async () => {
    expect(denial((await decide(csr({ username: 'system:serviceaccount:default:evil' }))).puts)).toContain('not the agent service account system:serviceaccount:skein-system:skein-agent');
  });

  it('denies the agent of n1 asking for node n2 (the request names node-n2)', async () => {
    const forN2 = await nodeIdentityRequest('n2');
    expect(denial((await decide(csr({ csrPem: forN2.csrPem }))).puts)).toContain('names "CN=node-n2", not CN=node-n1');
  });

  it('denies a token not bound to a pod and node (a TokenRequest of the service account)', async () => {
    expect(denial((await decide(csr({ node: '', pod: '', uid: '' }))).puts)).toContain('not bound to a pod and node');
  });

  it('denies a token of a pod that is gone, whose name a new pod on another node took', async () => {
    expect(denial((await decide(csr({ uid: 'uid-old' }))).puts)).toContain('is not the pod the token was bound to');
    expect(denial((await decide(csr(), [agentPod('skein-agent-abcde', 'n2', 'uid-1')])).puts)).toContain('runs on n2, not n1');
  });

  it('denies a node that does not exist and a pod of another service account', async () => {
    expect(denial((await decide(csr(), [agentPod('skein-agent-abcde', 'n1', 'uid-1')], ['n2'])).puts)).toContain('node n1 does not exist');
    const other = agentPod('skein-agent-abcde', 'n1', 'uid-1');
    other.spec!.serviceAccountName = 'default';
    expect(denial((await decide(csr(), [other])).puts)).toContain('does not run as skein-agent');
  });

  it('denies a forged request (no proof of the key) and usages beyond a client identity', async () => {
    const body = request.csrPem.split('\n');
    // Flip a character inside the signature (the end of the base64 body).
    const i = body.length - 3;
    body[i] = body[i]!.slice(0, -2) + (body[i]!.at(-2) === 'A' ? 'B' : 'A') + body[i]!.at(-1);
    expect(denial((await decide(csr({ csrPem: body.join('\n') }))).puts)).toMatch(/does not verify|does not parse/);
    expect(denial((await decide(csr({ usages: ['digital signature', 'client auth', 'server auth'] }))).puts)).toContain('usages server auth are not granted');
  });

  it('decides again when the Kubernetes API failed it, from the request as it is then', async () => {
    const { rest, puts } = api([agentPod('skein-agent-abcde', 'n1', 'uid-1')], ['n1']);
    const put = rest.put;
    let failures = 1;
    const flaky = { ...rest, put: (path: string, body: unknown) => (failures-- > 0 ? Promise.reject(new KubeApiError(500, 'InternalError', 'etcd timeout')) : put(path, body)), get: (path: string) => (path.endsWith('/skein-node-n1-xyz') ? Promise.resolve(csr()) : rest.get(path)) };
    const log = { info: vi.fn(), warn: vi.fn() };
    const signer = new NodeCsrSigner({ kc: undefined as never, rest: flaky as typeof rest, ca, log });
    await signer.handle(csr());
    expect(puts).toEqual([]);
    await vi.waitFor(() => expect(puts.map((p) => p.path.split('/').pop())).toEqual(['approval', 'status']), { timeout: 10_000, interval: 100 });
    await signer.stop();
  });

  it('only signs a request it approved before signing failed', async () => {
    const approved = csr({ status: { conditions: [{ type: 'Approved', status: 'True', reason: 'SkeinNodeIdentity' }] } });
    const { puts } = await decide(approved);
    expect(puts.map((p) => p.path.split('/').pop())).toEqual(['status']);
  });

  it('marks Failed, once, a request someone else approved that it refuses (Denied cannot follow Approved)', async () => {
    const approvedForeign = csr({ username: 'system:serviceaccount:default:evil', status: { conditions: [{ type: 'Approved', status: 'True', reason: 'ByHand' }] } });
    const { puts } = await decide(approvedForeign);
    expect(puts.map((p) => p.path.split('/').pop())).toEqual(['status']);
    expect(puts[0]!.body.status!.certificate).toBeUndefined();
    expect(puts[0]!.body.status!.conditions!.at(-1)).toMatchObject({ type: 'Failed', status: 'True', reason: 'SkeinNodeIdentityRefused' });
    // What the API then holds is decided: nothing more is written.
    expect((await decide(puts[0]!.body)).puts).toEqual([]);
  });

  it('leaves a request alone once decided', async () => {
    expect((await decide(csr({ status: { certificate: 'eA==' } }))).puts).toEqual([]);
    expect((await decide(csr({ status: { conditions: [{ type: 'Denied', status: 'True' }] } }))).puts).toEqual([]);
  });
});
