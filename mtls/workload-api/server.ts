// The SPIFFE Workload API on a unix socket (gRPC, @grpc/grpc-js). Each connection is bound to the process
// that opened it (a pidfd taken when it is accepted, closed with it), and every call is attested from that
// process by the identity source: a caller it does not know, or a connection whose process has exited (its
// pid may be another pod's by now), gets PermissionDenied, never anyone else's identity. Streams push a new
// response whenever the caller's SVIDs or the bundles change, while the connecting process lives.
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { JSONWebKeySet } from 'jose';
import { loadWorkloadApi, SECURITY_HEADER, type SpiffeWorkloadAPIHandlers, type Struct, type Value, type X509SVIDResponse } from './proto.js';
import { PeerProcess } from './peer-process.js';

export interface Caller {
  /** The connector's pid, uid and gid when it connected (SO_PEERCRED); the pid for messages only. */
  pid: number;
  uid: number;
  gid: number;
  /** The connecting process itself: anything about it (its cgroup) is read through readWhileAlive. */
  process: Pick<PeerProcess, 'alive' | 'readWhileAlive'>;
}

export interface X509SvidEntry {
  spiffeId: string;
  certChainDer: Buffer;
  keyPkcs8Der: Buffer;
  /** The CA certificates of the SVID's own trust domain, DER concatenated. */
  bundleDer: Buffer;
}

/** What the Workload API serves; the node agent implements it (attestation, signing, bundles). */
export interface IdentitySource<W> {
  /** The workload the caller's process belongs to; undefined when it is none this node serves (or it exited). */
  attest(caller: Caller): Promise<W | undefined>;
  x509Svids(w: W): Promise<X509SvidEntry[]>;
  /** Trust domain → its CA certificates (DER concatenated): this cluster's and every federated one. */
  x509Bundles(): ReadonlyMap<string, Buffer>;
  jwtSvids(w: W, audience: string[], spiffeId?: string): Promise<{ spiffeId: string; token: string }[]>;
  jwtBundles(): ReadonlyMap<string, JSONWebKeySet>;
  validateJwtSvid(token: string, audience: string): Promise<{ spiffeId: string; claims: Record<string, unknown> }>;
  /** Calls `listener` when w's SVIDs or any bundle change; returns the unsubscribe function. */
  subscribe(w: W | undefined, listener: () => void): () => void;
}

const HEADER = SECURITY_HEADER;

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;
type GrpcError = Partial<grpc.StatusObject> & { code: grpc.status };
const fail = (code: grpc.status, details: string): GrpcError => ({ code, details, metadata: new grpc.Metadata() });

/** google.protobuf.Struct from plain JSON, as proto-loader expects it. */
function toValue(v: unknown): Value {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}
const toStruct = (o: Record<string, unknown>): Struct => ({ fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])) });

const tdId = (td: string) => `spiffe://${td}`;

export class WorkloadApiServer<W> {
  private readonly grpcServer = new grpc.Server();
  private readonly callers = new Map<string, Caller>();
  private netServer?: NetServer;
  private nextConn = 0;
  /** Calls refused and why, for metrics. */
  readonly refusals = { missingHeader: 0, unknownCaller: 0, connectorExited: 0 };
  /** The last FetchX509SVID calls' time to their first answer on this side (call in -> answer written), ms. */
  readonly x509FirstAnswerMs: number[] = [];

  constructor(
    private readonly source: IdentitySource<W>,
    private readonly log: (msg: string) => void = () => {},
  ) {
    const handlers: SpiffeWorkloadAPIHandlers = {
      FetchX509SVID: (call) => void this.stream(call, true, (w) => this.x509Response(w!)),
      FetchX509Bundles: (call) => void this.stream(call, false, async () => ({ bundles: this.x509BundleMap() })),
      FetchJWTBundles: (call) => void this.stream(call, false, async () => ({ bundles: this.jwtBundleMap() })),
      FetchJWTSVID: (call, cb) => void this.fetchJwt(call, cb),
      ValidateJWTSVID: (call, cb) => void this.validateJwt(call, cb),
    };
    this.grpcServer.addService(loadWorkloadApi().SpiffeWorkloadAPI.service, handlers);
  }

  /** Listens on `path` (any local process may connect: attestation decides what it gets). */
  async listen(path: string): Promise<void> {
    mkdirSync(dirname(path), { recursive: true });
    if (existsSync(path)) rmSync(path);
    const injector = this.grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.netServer = createServer((sock: Socket) => {
      // Node exposes no public accessor for an accepted socket's fd; the addon needs it for SO_PEERPIDFD.
      const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      let peer: PeerProcess;
      try {
        peer = PeerProcess.ofSocket(fd ?? -1);
      } catch (err) {
        this.log(`workload API: cannot tell which process opened a connection (${(err as Error).message}); closing it`);
        sock.destroy();
        return;
      }
      // grpc-js reports a call's peer from the socket's remoteAddress: make it name this connection.
      const id = `conn-${++this.nextConn}`;
      Object.defineProperty(sock, 'remoteAddress', { value: id });
      this.callers.set(id, { pid: peer.pidAtConnect, uid: peer.uid, gid: peer.gid, process: peer });
      sock.on('close', () => {
        this.callers.delete(id);
        peer.close();
      });
      injector.injectConnection(sock);
    });
    await new Promise<void>((resolve, reject) => {
      this.netServer!.once('error', reject);
      this.netServer!.listen(path, () => resolve());
    });
    chmodSync(path, 0o777);
  }

  /** Open connections (each holds its connector's pidfd until it closes). */
  get connections(): number {
    return this.callers.size;
  }

  private callerOf(call: AnyCall): Caller | undefined {
    return this.callers.get(call.getPeer());
  }

  /** The checks every call passes first: the standard's security header, then attestation. */
  private async admit(call: AnyCall): Promise<{ ok: true; w: W } | { ok: false; err: GrpcError }> {
    if (call.metadata.get(HEADER)[0] !== 'true') {
      this.refusals.missingHeader++;
      return { ok: false, err: fail(grpc.status.INVALID_ARGUMENT, `security header missing from request: send metadata "${HEADER}: true"`) };
    }
    const caller = this.callerOf(call);
    if (caller && !caller.process.alive()) return { ok: false, err: this.connectorExited(caller) };
    const w = caller && (await this.source.attest(caller));
    if (!w) {
      // attest reads the process only while it lives: tell an exit during the call from a stranger.
      if (caller && !caller.process.alive()) return { ok: false, err: this.connectorExited(caller) };
      this.refusals.unknownCaller++;
      return { ok: false, err: fail(grpc.status.PERMISSION_DENIED, `no identity issued to this caller (pid ${caller?.pid ?? 'unknown'}): it is not a pod this node serves`) };
    }
    return { ok: true, w };
  }

  private connectorExited(caller: Caller): GrpcError {
    this.refusals.connectorExited++;
    return fail(
      grpc.status.PERMISSION_DENIED,
      `the process that opened this connection (pid ${caller.pid}) has exited: a Workload API connection serves only the process that opened it (its pid may belong to another process now); connect again`,
    );
  }

  private async stream<Res>(call: grpc.ServerWritableStream<unknown, Res>, perWorkload: boolean, build: (w: W | undefined) => Promise<Res>): Promise<void> {
    const t0 = performance.now();
    const admitted = await this.admit(call);
    if (!admitted.ok) return void call.emit('error', admitted.err);
    let last = '';
    let closed = false;
    const push = async () => {
      if (closed) return;
      // What the stream carries was attested for its connector: once that process is gone, so is the stream.
      const caller = this.callerOf(call);
      if (perWorkload && caller && !caller.process.alive()) {
        closed = true;
        unsubscribe();
        return void call.emit('error', this.connectorExited(caller));
      }
      try {
        const msg = await build(admitted.w);
        const fingerprint = JSON.stringify(msg, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v));
        if (fingerprint === last || closed) return;
        const first = last === '';
        last = fingerprint;
        call.write(msg);
        if (first && perWorkload) {
          this.x509FirstAnswerMs.push(performance.now() - t0);
          if (this.x509FirstAnswerMs.length > 100) this.x509FirstAnswerMs.shift();
        }
      } catch (err) {
        closed = true;
        unsubscribe();
        call.emit('error', fail(grpc.status.UNAVAILABLE, `could not get an identity: ${(err as Error).message}`));
      }
    };
    const unsubscribe = this.source.subscribe(perWorkload ? admitted.w : undefined, () => void push());
    call.on('cancelled', () => {
      closed = true;
      unsubscribe();
    });
    await push();
  }

  private async x509Response(w: W): Promise<X509SVIDResponse> {
    const svids = await this.source.x509Svids(w);
    const bundles = this.source.x509Bundles();
    const own = new Set(svids.map((s) => s.spiffeId.split('/')[2]));
    const federated = Object.fromEntries([...bundles].filter(([td]) => !own.has(td)).map(([td, der]) => [tdId(td), der]));
    return {
      // The own trust domain's bundle as it is now (both CAs while one rotates), not as it was when the SVID
      // was signed: a peer's SVID from the new CA must verify before this SVID is renewed.
      svids: svids.map((s) => ({ spiffe_id: s.spiffeId, x509_svid: s.certChainDer, x509_svid_key: s.keyPkcs8Der, bundle: bundles.get(s.spiffeId.split('/')[2]!) ?? s.bundleDer, hint: '' })),
      crl: [],
      federated_bundles: federated,
    };
  }

  private x509BundleMap(): Record<string, Buffer> {
    return Object.fromEntries([...this.source.x509Bundles()].map(([td, der]) => [tdId(td), der]));
  }

  private jwtBundleMap(): Record<string, Buffer> {
    return Object.fromEntries([...this.source.jwtBundles()].map(([td, jwks]) => [tdId(td), Buffer.from(JSON.stringify(jwks))]));
  }

  private async fetchJwt(...[call, cb]: Parameters<SpiffeWorkloadAPIHandlers['FetchJWTSVID']>): Promise<void> {
    const admitted = await this.admit(call);
    if (!admitted.ok) return cb(admitted.err);
    if (!call.request.audience?.length) return cb(fail(grpc.status.INVALID_ARGUMENT, 'audience: at least one audience is required'));
    try {
      const svids = await this.source.jwtSvids(admitted.w, call.request.audience, call.request.spiffe_id || undefined);
      if (!svids.length) return cb(fail(grpc.status.PERMISSION_DENIED, `this caller has no identity ${call.request.spiffe_id}`));
      cb(null, { svids: svids.map((s) => ({ spiffe_id: s.spiffeId, svid: s.token, hint: '' })) });
    } catch (err) {
      cb(fail(grpc.status.UNAVAILABLE, `could not sign a JWT-SVID: ${(err as Error).message}`));
    }
  }

  private async validateJwt(...[call, cb]: Parameters<SpiffeWorkloadAPIHandlers['ValidateJWTSVID']>): Promise<void> {
    const admitted = await this.admit(call);
    if (!admitted.ok) return cb(admitted.err);
    if (!call.request.audience) return cb(fail(grpc.status.INVALID_ARGUMENT, 'audience: required'));
    if (!call.request.svid) return cb(fail(grpc.status.INVALID_ARGUMENT, 'svid: required'));
    try {
      const r = await this.source.validateJwtSvid(call.request.svid, call.request.audience);
      cb(null, { spiffe_id: r.spiffeId, claims: toStruct(r.claims) });
    } catch (err) {
      cb(fail(grpc.status.INVALID_ARGUMENT, (err as Error).message));
    }
  }

  async close(): Promise<void> {
    this.grpcServer.forceShutdown();
    await new Promise<void>((resolve) => (this.netServer ? this.netServer.close(() => resolve()) : resolve()));
  }
}
