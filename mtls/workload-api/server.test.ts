import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, newKeyAndCsr } from '../x509.js';
import { checkX509Svid, jwtBundleOf, signJwtSvid, signX509Svid, validateJwtSvid } from '../svid.js';
import { securityHeader, watchX509Context, workloadApiClient, type X509Context } from './client.js';
import { WorkloadApiServer, type IdentitySource } from './server.js';

const dir = mkdtempSync(join(tmpdir(), 'skein-wl-'));
const socket = join(dir, 'workload.sock');
const ca = await createCA({ commonName: 'east', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
const west = await createCA({ commonName: 'west', ttlMs: 86_400_000, uri: 'spiffe://west.skein' });
const der = (pem: string) => new X509Certificate(pem).raw;
const ID = 'spiffe://east.skein/ns/default/sa/client';

// A source that knows exactly one process (this one) and whose SVID can be rotated on demand.
let known = true;
let generation = 0;
const listeners = new Set<() => void>();
let bundles = new Map([['east.skein', der(ca.certPem)], ['west.skein', der(west.certPem)]]);
async function issue() {
  const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
  return { spiffeId: ID, certChainDer: (await signX509Svid(ca, { spiffeId: ID, csrDer })).certDer, keyPkcs8Der, bundleDer: der(ca.certPem) };
}
let current = await issue();
const source: IdentitySource<string> = {
  attest: async (c) => (known && c.pid === process.pid ? 'me' : undefined),
  x509Svids: async () => [current],
  x509Bundles: () => bundles,
  jwtSvids: async (_w, audience) => [{ spiffeId: ID, token: (await signJwtSvid(ca, { spiffeId: ID, audience })).token }],
  jwtBundles: () => new Map([['east.skein', { keys: [] }]]),
  validateJwtSvid: async (token, audience) => validateJwtSvid(token, audience, new Map([['east.skein', await jwtBundleOf(ca.certPem)]])) as never,
  subscribe: (_w, l) => {
    listeners.add(l);
    return () => listeners.delete(l);
  },
};
const server = new WorkloadApiServer(source);

beforeAll(() => server.listen(socket));
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const unary = <T>(method: string, req: object, md = securityHeader()) =>
  new Promise<T>((resolve, reject) => {
    const c = workloadApiClient(socket);
    (c[method] as (r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v: T) => void) => void)(req, md, (err, v) => {
      c.close();
      err ? reject(err) : resolve(v);
    });
  });

function nextContexts(n: number, md?: grpc.Metadata): Promise<X509Context[]> {
  return new Promise((resolve, reject) => {
    const seen: X509Context[] = [];
    const w = watchX509Context(socket, (ctx) => {
      seen.push(ctx);
      if (seen.length === 1) generation++;
      if (seen.length === n) {
        w.stop();
        resolve(seen);
      }
    }, reject, md);
  });
}

describe('the SPIFFE Workload API server', () => {
  it('streams the caller its X.509-SVID, key and bundle, with the federated bundles', async () => {
    const [ctx] = await nextContexts(1);
    const svid = ctx!.svids[0]!;
    expect(svid.spiffe_id).toBe(ID);
    expect(checkX509Svid(svid.x509_svid)).toBe(ID);
    expect(Buffer.compare(svid.bundle, der(ca.certPem))).toBe(0);
    expect(Object.keys(ctx!.federated_bundles)).toEqual(['spiffe://west.skein']);
  });

  it('pushes a new response on rotation and when a bundle goes away', async () => {
    const gen = generation;
    const got = nextContexts(3);
    await new Promise((r) => setTimeout(r, 200));
    expect(generation).toBe(gen + 1);
    current = await issue();
    for (const l of listeners) l();
    await new Promise((r) => setTimeout(r, 100));
    bundles = new Map([['east.skein', der(ca.certPem)]]);
    for (const l of listeners) l();
    const [first, rotated, unfederated] = await got;
    expect(Buffer.compare(first!.svids[0]!.x509_svid, rotated!.svids[0]!.x509_svid)).not.toBe(0);
    expect(Object.keys(unfederated!.federated_bundles)).toEqual([]);
  });

  it('refuses a request without the security header with InvalidArgument', async () => {
    await expect(nextContexts(1, new grpc.Metadata())).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('workload.spiffe.io') });
    await expect(unary('FetchJWTSVID', { audience: ['x'] }, new grpc.Metadata())).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it('gives an unknown caller PermissionDenied, on every method', async () => {
    known = false;
    try {
      await expect(nextContexts(1)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      await expect(unary('FetchJWTSVID', { audience: ['x'] })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    } finally {
      known = true;
    }
    expect(server.refusals.unknownCaller).toBe(2);
  });

  it('signs JWT-SVIDs for the caller and validates them, returning the claims', async () => {
    const r = await unary<{ svids: { spiffe_id: string; svid: string }[] }>('FetchJWTSVID', { audience: ['spiffe://west.skein/ns/default/sa/server'] });
    expect(r.svids[0]!.spiffe_id).toBe(ID);
    const v = await unary<{ spiffe_id: string; claims: { fields: Record<string, { stringValue?: string }> } }>('ValidateJWTSVID', { audience: 'spiffe://west.skein/ns/default/sa/server', svid: r.svids[0]!.svid });
    expect(v.spiffe_id).toBe(ID);
    expect(v.claims.fields.sub?.stringValue).toBe(ID);
    await expect(unary('ValidateJWTSVID', { audience: 'someone-else', svid: r.svids[0]!.svid })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });
});
