// RenewNodeIdentity, as an attacker holding one node's real certificate sees it: the node CA renews only the
// node that certificate names, only for a key the request proves, only for the policy's lifetime, and only
// while the calling certificate is valid (a channel opened before it expired does not extend it).
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { KubeApiError } from '../../mesh/kube/rest.js';
import { NodeCaClient } from '../../mesh/node-ca/client.js';
import { issueNodeIdentity, issueRemoteClient, nodeIdentityRequest, nodeUri } from '../../mtls/mesh-identities.js';
import { createCA, type PemPair } from '../../mtls/x509.js';
import { NodeCaServer } from './server.js';

const CLUSTER = 'rn';
const TTL_MS = 60_000;
const mesh = await createCA({ commonName: 'mesh CA', ttlMs: 86_400_000 });
const workload = await createCA({ commonName: 'workload CA', ttlMs: 86_400_000, uri: `spiffe://${CLUSTER}.skein` });
const nodes = new Set(['node-a', 'node-b']);
const rest = {
  get: async <T>(path: string): Promise<T> => {
    const name = decodeURIComponent(path.replace('/api/v1/nodes/', ''));
    if (!nodes.has(name)) throw new KubeApiError(404, 'NotFound', `nodes "${name}" not found`);
    return { metadata: { name } } as T;
  },
};
const log = { info: () => {}, warn: () => {} };
const server = new NodeCaServer({ ca: { cluster: CLUSTER, trustDomain: `${CLUSTER}.skein`, mesh, workload, workloadBundle: workload.certPem }, rest, svidTtlMs: 3600_000, jwtTtlMs: 300_000, servingTtlMs: 3600_000, nodeIdentityTtlMs: TTL_MS, log });
const port = await server.listen('127.0.0.1', 0, ['127.0.0.1']);
const clients: NodeCaClient[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await server.close();
});

const as = (cert: PemPair) => {
  const c = new NodeCaClient(`127.0.0.1:${port}`, { caPem: mesh.certPem, ...cert });
  clients.push(c);
  return c;
};
const code = (p: Promise<unknown>) => p.then(() => 'issued', (err: grpc.ServiceError) => ({ code: err.code, details: err.details }));

describe('RenewNodeIdentity', () => {
  it('renews the caller\'s own node for the key it proves, for the policy\'s lifetime, signed by the mesh CA', async () => {
    const a = as(await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'node-a'));
    const { keyPem, csrPem } = await nodeIdentityRequest('node-a');
    const before = Date.now();
    const r = await a.renewNodeIdentity(csrPem);
    const cert = new X509Certificate(r.certificate_pem);
    expect(cert.subject).toBe('CN=node-node-a');
    expect(cert.subjectAltName).toBe(`URI:${nodeUri(CLUSTER, 'node-a')}`);
    expect(cert.verify(new X509Certificate(mesh.certPem).publicKey)).toBe(true);
    expect(cert.checkPrivateKey(await import('node:crypto').then((c) => c.createPrivateKey(keyPem)))).toBe(true);
    expect(r.ca_pem).toBe(mesh.certPem);
    // Never longer than the policy (1 s of slack for the clock's second resolution).
    expect(Date.parse(cert.validTo)).toBeLessThanOrEqual(before + TTL_MS + 1000);
    expect(r.expires_at_unix_ms).toBe(Date.parse(cert.validTo));
  });

  it('refuses node A\'s certificate asking for node B, and issues nothing', async () => {
    const a = as(await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'node-a'));
    const issued = server.counts.nodeIdentities;
    const { csrPem } = await nodeIdentityRequest('node-b');
    expect(await code(a.renewNodeIdentity(csrPem))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/names "CN=node-node-b", not CN=node-node-a/) });
    expect(server.counts.nodeIdentities).toBe(issued);
  });

  it('refuses a request whose signature does not prove its key', async () => {
    const a = as(await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'node-a'));
    const { csrPem } = await nodeIdentityRequest('node-a');
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 1]! ^= 0xff; // the signature's last byte
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    const issued = server.counts.nodeIdentities;
    expect(await code(a.renewNodeIdentity(forged))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/signature does not verify|does not parse/) });
    expect(server.counts.nodeIdentities).toBe(issued);
  });

  it('renews no identity that names no node (a peer\'s read identity), and no node the API no longer has', async () => {
    const peer = as(await issueRemoteClient({ cluster: CLUSTER, mesh }, 'node-a'));
    expect(await code(peer.renewNodeIdentity((await nodeIdentityRequest('node-a')).csrPem))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(/names no node/) });
    const gone = as(await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'node-gone'));
    expect(await code(gone.renewNodeIdentity((await nodeIdentityRequest('node-gone')).csrPem))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'node node-gone does not exist' });
  });

  it('an expired node certificate cannot renew: not on a new handshake, nor on a channel opened while it was valid', async () => {
    const short = await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'node-a', 2_000);
    const open = as(short);
    await open.renewNodeIdentity((await nodeIdentityRequest('node-a')).csrPem); // valid now: the channel is up
    await new Promise((r) => setTimeout(r, Date.parse(new X509Certificate(short.certPem).validTo) - Date.now() + 1_100));
    const issued = server.counts.nodeIdentities;
    expect(await code(open.renewNodeIdentity((await nodeIdentityRequest('node-a')).csrPem))).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(/is not valid now/) });
    // A new channel with it fails the handshake (the server verifies client certificates' validity).
    expect(await code(as(short).renewNodeIdentity((await nodeIdentityRequest('node-a')).csrPem))).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(server.counts.nodeIdentities).toBe(issued);
  });

  it('a node certificate of another mesh CA (a retired one) is refused at the handshake', async () => {
    const other = await createCA({ commonName: 'old mesh CA', ttlMs: 86_400_000 });
    const c = new NodeCaClient(`127.0.0.1:${port}`, { caPem: mesh.certPem, ...(await issueNodeIdentity({ cluster: CLUSTER, mesh: other }, 'node-a')) });
    clients.push(c);
    expect(await code(c.renewNodeIdentity((await nodeIdentityRequest('node-a')).csrPem))).toMatchObject({ code: grpc.status.UNAVAILABLE });
  });
});
