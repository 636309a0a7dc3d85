import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, newKeyAndCsr } from '../x509.js';
import { checkX509Svid, jwtBundleOf, signJwtSvid, signX509Svid, validateJwtSvid } from '../svid.js';
import { securityHeader, watchX509Context, workloadApiClient, type X509Context } from './client.js';
import { PeerProcess } from './peer-process.js';
import { WorkloadApiServer, type IdentitySource } from './server.js';

const dir = mkdtempSync(join(tmpdir(), 'skein-wl-'));
const socket = join(dir, 'workload.sock');
const ca = await createCA({ commonName: 'east', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
const west = await createCA({ commonName: 'west', ttlMs: 86_400_000, uri: 'spiffe://west.skein' });
const der = (pem: string) => new X509Certificate(pem).raw;
const ID = 'spiffe://east.skein/ns/default/sa/client';

// A source that knows the processes in `knownPids` (this one, and test children) and whose SVID can be
// rotated on demand. It asks for the caller's pid the way the agent does: through readWhileAlive.
let known = true;
const knownPids = new Set([process.pid]);
let generation = 0;
const listeners = new Set<() => void>();
let bundles = new Map([['east.skein', der(ca.certPem)], ['west.skein', der(west.certPem)]]);
async function issue() {
  const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
  return { spiffeId: ID, certChainDer: (await signX509Svid(ca, { spiffeId: ID, csrDer })).certDer, keyPkcs8Der, bundleDer: der(ca.certPem) };
}
let current = await issue();
const source: IdentitySource<string> = {
  attest: async (c) => (known && c.process.readWhileAlive((pid) => knownPids.has(pid)) ? 'me' : undefined),
  x509Svids: async () => [current],
  x509Bundles: () => bundles,
  jwtSvids: async (_w, audience) => [{ spiffeId: ID, token: (await signJwtSvid(ca, { spiffeId: ID, audience })).token }],
  jwtBundles: () => new Map([['east.skein', { keys: [] }]]),
  validateJwtSvid: async (token, audience) => validateJwtSvid(token, audience, new Map([['east.skein', await jwtBundleOf(ca.certPem)]])),
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
    ((c as unknown as Record<string, unknown>)[method] as (r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, v: T) => void) => void)(req, md, (err, v) => {
      c.close();
      if (err) reject(err);
      else resolve(v);
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
    }, (err) => {
      w.stop(); // close the client: the fd test below counts the server's open connections
      reject(err);
    }, md);
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

  it('serves the own trust domain’s bundle as it is now (both CAs while one rotates), not as it was when the SVID was signed', async () => {
    const next = await createCA({ commonName: 'east 2', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
    const before = bundles;
    const both = Buffer.concat([der(ca.certPem), der(next.certPem)]);
    bundles = new Map([['east.skein', both]]);
    try {
      const [ctx] = await nextContexts(1);
      expect(Buffer.compare(ctx!.svids[0]!.bundle, both)).toBe(0);
      expect(Buffer.compare(current.bundleDer, der(ca.certPem))).toBe(0); // what the node CA stamped at signing
    } finally {
      bundles = before;
    }
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

// --- A connection belongs to the process that opened it -------------------------------------------------

/**
 * A child process that connects to `path` and hands the open connection to this process (as a child that
 * inherits it, or any process it is passed to, would hold it), then lives until told to exit.
 */
async function connectorHandingOver(path: string): Promise<{ child: ChildProcess; conn: Socket; exit: () => Promise<void> }> {
  const script = `const s = require('net').createConnection(process.argv[1], () => process.send('conn', s));
    process.on('message', (m) => m === 'exit' && process.exit(0));`;
  const child = spawn(process.execPath, ['-e', script, path], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const conn = await new Promise<Socket>((resolve, reject) => {
    child.once('message', (_m, handle) => resolve(handle as Socket));
    child.once('exit', (code) => reject(new Error(`the connector exited (${code}) before handing its connection over`)));
  });
  const exit = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.send('exit');
    });
  return { child, conn, exit };
}

interface GrpcEnd {
  status: number;
  message: string;
}

/** A server-streaming Workload API call spoken by hand over an HTTP/2 session on a socket we were handed. */
function rawStream(session: http2.ClientHttp2Session, method: string) {
  const req = session.request({ ':method': 'POST', ':path': `/SpiffeWorkloadAPI/${method}`, 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
  const endOf = (h: http2.IncomingHttpHeaders): GrpcEnd => ({ status: Number(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')) });
  const ended = new Promise<GrpcEnd>((resolve, reject) => {
    req.on('response', (h) => h['grpc-status'] !== undefined && resolve(endOf(h))); // trailers-only answer
    req.on('trailers', (h: http2.IncomingHttpHeaders) => resolve(endOf(h)));
    req.on('error', reject);
  });
  const first = new Promise<Buffer>((resolve) => {
    let buf = Buffer.alloc(0);
    req.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) resolve(buf.subarray(5, 5 + buf.readUInt32BE(1)));
    });
  });
  req.end(Buffer.alloc(5)); // one empty message: the request types' fields are all optional
  return { first, ended, close: () => req.close() };
}

/** FetchX509SVID's first answer over `session`: its message, or how the call ended. */
async function fetchX509Once(session: http2.ClientHttp2Session): Promise<{ message?: Buffer; end?: GrpcEnd }> {
  const s = rawStream(session, 'FetchX509SVID');
  try {
    return await Promise.race([s.first.then((message) => ({ message })), s.ended.then((end) => ({ end }))]);
  } finally {
    s.close();
  }
}

const pidfdsOfThisProcess = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).includes('pidfd');
    } catch {
      return false; // closed meanwhile (readdir's own fd)
    }
  }).length;

async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('a Workload API connection belongs to the process that opened it', () => {
  it('serves a connection handed to another process while its connector lives, and refuses it once the connector exited', async () => {
    const c = await connectorHandingOver(socket);
    // The source goes on knowing the connector's pid after it exits, as it would if a pod's process got it:
    // only the pidfd can tell the connection's process is gone.
    knownPids.add(c.child.pid!);
    const session = http2.connect('http://workload-api', { createConnection: () => c.conn });
    try {
      const served = await fetchX509Once(session);
      expect(served.end).toBeUndefined();
      expect(served.message!.includes(Buffer.from(ID))).toBe(true);

      const before = server.refusals.connectorExited;
      await c.exit();
      const refused = await fetchX509Once(session);
      expect(refused.message).toBeUndefined();
      expect(refused.end).toMatchObject({ status: grpc.status.PERMISSION_DENIED, message: expect.stringMatching(new RegExp(`process that opened this connection \\(pid ${c.child.pid}\\) has exited`)) });
      expect(server.refusals.connectorExited).toBe(before + 1);
    } finally {
      session.destroy();
      knownPids.delete(c.child.pid!);
      c.child.kill('SIGKILL');
    }
  });

  it('ends a stream at its next push once the connector has exited', async () => {
    const c = await connectorHandingOver(socket);
    knownPids.add(c.child.pid!);
    const session = http2.connect('http://workload-api', { createConnection: () => c.conn });
    try {
      const s = rawStream(session, 'FetchX509SVID');
      expect((await s.first).includes(Buffer.from(ID))).toBe(true);
      await c.exit();
      current = await issue(); // a rotation: the stream would push the new SVID
      for (const l of listeners) l();
      await expect(s.ended).resolves.toMatchObject({ status: grpc.status.PERMISSION_DENIED, message: expect.stringContaining('has exited') });
    } finally {
      session.destroy();
      knownPids.delete(c.child.pid!);
      c.child.kill('SIGKILL');
    }
  });

  it('closes the connection’s pidfd when the connection closes (no fd leak)', async () => {
    await until('earlier connections to close', () => server.connections === 0);
    const baseline = pidfdsOfThisProcess();
    const conns = Array.from({ length: 5 }, () => createConnection(socket));
    try {
      await until('the server to pin 5 connections', () => server.connections === 5);
      expect(pidfdsOfThisProcess()).toBe(baseline + 5);
    } finally {
      for (const s of conns) s.destroy();
    }
    await until('the server to see the 5 connections closed', () => server.connections === 0);
    expect(pidfdsOfThisProcess()).toBe(baseline);
  });
});

describe('PeerProcess: the process behind a unix socket', () => {
  const path = join(dir, 'peer.sock');
  // Not read from: a socket whose peer is gone stays open for the test to ask about its peer.
  const accepted: { sock: Socket; fd: number }[] = [];
  const listener = createServer({ pauseOnConnect: true }, (sock) => accepted.push({ sock, fd: (sock as unknown as { _handle: { fd: number } })._handle.fd }));
  beforeAll(() => new Promise<void>((r) => listener.listen(path, r)));
  afterAll(() => {
    for (const a of accepted) a.sock.destroy();
    return new Promise<void>((r) => listener.close(() => r()));
  });
  const nextAccepted = async () => {
    const n = accepted.length;
    await until('a connection', () => accepted.length > n);
    return accepted[n]!;
  };

  it('pins the connector by SO_PEERPIDFD, and by pidfd_open where that is missing; both see it exit', async () => {
    const child = spawn(process.execPath, ['-e', "require('net').createConnection(process.argv[1]); setInterval(() => {}, 1000)", path], { stdio: 'ignore' });
    const pinned: PeerProcess[] = [];
    try {
      const { fd } = await nextAccepted();
      pinned.push(PeerProcess.ofSocket(fd), PeerProcess.ofSocket(fd, 'pidfd_open'));
      expect(pinned.map((p) => p.via)).toEqual(['SO_PEERPIDFD', 'pidfd_open']);
      for (const p of pinned) {
        expect(p.pidAtConnect).toBe(child.pid);
        expect(p.alive()).toBe(true);
        expect(p.currentPid()).toBe(child.pid);
        expect(p.readWhileAlive((pid) => pid)).toBe(child.pid);
      }
      await new Promise((r) => child.once('exit', r).kill('SIGKILL'));
      for (const p of pinned) {
        expect(p.alive()).toBe(false);
        expect(p.currentPid()).toBeUndefined();
        let read = false;
        expect(p.readWhileAlive(() => (read = true))).toBeUndefined();
        expect(read).toBe(false);
      }
    } finally {
      for (const p of pinned) p.close();
      child.kill('SIGKILL');
    }
  });

  it('never takes a connector that exited before the accept for whoever holds its pid now', async () => {
    // spawnSync blocks this event loop: the child connects, exits and is reaped before we accept.
    const r = spawnSync(process.execPath, ['-e', "require('net').createConnection(process.argv[1], () => process.exit(0))", path]);
    expect(r.status).toBe(0);
    const { fd } = await nextAccepted();
    // The fallback must refuse: its pid is gone (or, reused, names a process started after the connect).
    expect(() => PeerProcess.ofSocket(fd, 'pidfd_open')).toThrow(/pidfd_open\(\d+\)/);
    // SO_PEERPIDFD either refuses too or (Linux >= 6.16) gives a pidfd of the dead connector: never a live process.
    let p: PeerProcess | undefined;
    try {
      p = PeerProcess.ofSocket(fd);
    } catch (err) {
      expect((err as Error).message).toMatch(/SO_PEERPIDFD/);
    }
    if (p) {
      expect(p.alive()).toBe(false);
      expect(p.readWhileAlive((pid) => pid)).toBeUndefined();
      p.close();
    }
  });
});
