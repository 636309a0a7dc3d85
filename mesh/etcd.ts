// The cluster's mesh etcd through the etcd3 client: connection options (mTLS when given), a bounded
// deadline on every unary call so a dead etcd surfaces as an error instead of a hang, paged consistent
// listings, and the KV adapter the state writer works through.
import { readFileSync } from 'node:fs';
import { ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, isRecoverableError, Range, type IKeyValue, type IOptions } from 'etcd3';
import type { KvBackend, KvOp } from './state-writer.js';

export interface MeshEtcdOptions {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** PEMs in memory (issued at start-up) instead of files. */
  tls?: { caPem: string; certPem: string; keyPem: string };
  callTimeoutMs?: number;
  /**
   * The name the server certificate is verified against (`meshEtcdServerName(cluster)`). Endpoints are
   * usually IPs, and TLS forbids an IP as the server name (Node warns, DEP0123): verify by name instead.
   */
  serverName?: string;
}

/** The local mesh etcd client as its users hold it: a getter, because renewing this process's identity replaces the client. */
export type EtcdRef = () => Etcd3;

/**
 * etcd fails a request whose authentication predates a change of users or roles ("revision of auth store
 * is old"); the same request, sent again, passes. Users and roles change whenever a node or peer comes or
 * goes, so every client retries that, as it retries an unreachable member.
 */
const isAuthRevisionRace = (err: Error) => /revision of auth store is old/.test(err.message);
const retryPolicy = retry(handleWhen((err) => isRecoverableError(err) || isAuthRevisionRace(err)), { maxAttempts: 3, backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 500 }) });

export function connectMeshEtcd(o: MeshEtcdOptions): Etcd3 {
  const timeout = o.callTimeoutMs ?? 5_000;
  const opts: IOptions = {
    hosts: o.endpoints,
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: new Date(Date.now() + timeout) }),
    faultHandling: { global: retryPolicy },
    ...(o.serverName ? { grpcOptions: { 'grpc.ssl_target_name_override': o.serverName, 'grpc.default_authority': o.serverName } } : {}),
  };
  if (o.tls) {
    opts.credentials = { rootCertificate: Buffer.from(o.tls.caPem), privateKey: Buffer.from(o.tls.keyPem), certChain: Buffer.from(o.tls.certPem) };
  } else if (o.caFile) {
    opts.credentials = {
      rootCertificate: readFileSync(o.caFile),
      privateKey: o.keyFile ? readFileSync(o.keyFile) : undefined,
      certChain: o.certFile ? readFileSync(o.certFile) : undefined,
    };
  }
  return new Etcd3(opts);
}

/**
 * Every key under `prefix` as one consistent snapshot: pages of `pageSize` keys (a single response is capped
 * by gRPC's 4 MiB message limit), all read at the revision of the first page (or at `atRevision`).
 */
export async function listPrefix(client: Etcd3, prefix: string, pageSize = 500, atRevision?: number): Promise<{ kvs: IKeyValue[]; revision: number }> {
  const end = Range.prefix(prefix).end;
  const kvs: IKeyValue[] = [];
  let start: Buffer = Buffer.from(prefix);
  let revision: number | undefined = atRevision;
  for (;;) {
    let q = client.getAll().inRange(new Range(start, end)).sort('Key', 'Ascend').limit(pageSize);
    if (revision !== undefined) q = q.revision(revision);
    const res = await q.exec();
    revision ??= Number(res.header.revision);
    kvs.push(...res.kvs);
    if (!res.more || res.kvs.length === 0) return { kvs, revision };
    start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
  }
}

/** Several prefixes as one consistent snapshot (all read at the first one's revision). */
export async function listPrefixes(client: Etcd3, prefixes: string[]): Promise<{ kvs: IKeyValue[]; revision: number }> {
  const kvs: IKeyValue[] = [];
  let revision: number | undefined;
  for (const prefix of prefixes) {
    const page = await listPrefix(client, prefix, 500, revision);
    revision = page.revision;
    kvs.push(...page.kvs);
  }
  return { kvs, revision: revision ?? 0 };
}

export class EtcdKv implements KvBackend {
  constructor(private readonly etcd: EtcdRef) {}

  async list(prefix: string): Promise<Map<string, string>> {
    const { kvs } = await listPrefix(this.etcd(), prefix);
    return new Map(kvs.map((kv) => [kv.key.toString(), kv.value.toString()]));
  }

  async apply(ops: KvOp[]): Promise<void> {
    if (ops.length === 0) return;
    // Version > -1 holds for every key, present or not: an unconditional multi-op transaction.
    const c = this.etcd();
    await c
      .if(ops[0]!.key, 'Version', '>', -1)
      .then(...ops.map((op) => (op.value === null ? c.delete().key(op.key) : c.put(op.key).value(op.value))))
      .commit();
  }
}
