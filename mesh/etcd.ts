// The cluster's mesh etcd through the etcd3 client: connection options (mTLS when given), a bounded
// deadline on every unary call so a dead etcd surfaces as an error instead of a hang, paged consistent
// listings, and the KV adapter the state writer works through.
import { readFileSync } from 'node:fs';
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry } from 'cockatiel';
import { Etcd3, isRecoverableError, Range, type IKeyValue, type IOptions } from 'etcd3';
import * as grpc from '@grpc/grpc-js';
import type { SwappableCredentials } from '../mtls/swappable-credentials.js';
import { BatchTooLargeError, type KvBackend, type KvOp } from './state-writer.js';

export interface MeshEtcdOptions {
  endpoints: string[];
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** PEMs in memory (issued at start-up) instead of files. */
  tls?: { caPem: string; certPem: string; keyPem: string };
  /**
   * An identity that is renewed while the client lives (a node agent's): every new connection (a reconnect
   * after etcd restarts, a new member) presents the certificate current at that moment, while connections
   * already open, with their watches and lease keepalives, go on untouched.
   */
  renewing?: SwappableCredentials;
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

/**
 * etcd or gRPC refusing one request or response for its size: etcd's --max-request-bytes ("request is too
 * large", GRPCInvalidArgumentError), --max-txn-ops ("too many operations in txn request"), or a message past
 * a gRPC size limit ("Received/Sent message larger than max", RESOURCE_EXHAUSTED). Permanent for that
 * request: only a smaller one helps. Matched on the message because RESOURCE_EXHAUSTED also means NOSPACE
 * ("database space exceeded"), which is not about this request and is retried like any outage.
 */
export const isTooLargeError = (err: unknown): boolean => err instanceof Error && /request is too large|too many operations in txn request|message larger than max/i.test(err.message);

/**
 * etcd3 counts RESOURCE_EXHAUSTED as recoverable: it would send an oversized request three more times and
 * then open the host's circuit for 5 s, failing every other call of this client meanwhile. A size error
 * is handed straight back instead (the caller makes the request smaller); everything else as etcd3's
 * defaults (the host breaker below is its default with that one exception).
 */
const isTransient = (err: Error) => isRecoverableError(err) && !isTooLargeError(err);
const retryPolicy = retry(handleWhen((err) => isTransient(err) || isAuthRevisionRace(err)), { maxAttempts: 3, backoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 500 }) });
const hostPolicy = () => circuitBreaker(handleWhen(isTransient), { halfOpenAfter: 5_000, breaker: new ConsecutiveBreaker(3) });

export function connectMeshEtcd(o: MeshEtcdOptions): Etcd3 {
  const timeout = o.callTimeoutMs ?? 5_000;
  const opts: IOptions = {
    hosts: o.endpoints,
    dialTimeout: timeout,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: new Date(Date.now() + timeout) }),
    faultHandling: { global: retryPolicy, host: hostPolicy },
    ...(o.serverName ? { grpcOptions: { 'grpc.ssl_target_name_override': o.serverName, 'grpc.default_authority': o.serverName } } : {}),
  };
  const tls = o.renewing ? { caPem: o.renewing.caPem, ...o.renewing.current } : o.tls;
  if (tls) {
    opts.credentials = { rootCertificate: Buffer.from(tls.caPem), privateKey: Buffer.from(tls.keyPem), certChain: Buffer.from(tls.certPem) };
  } else if (o.caFile) {
    opts.credentials = {
      rootCertificate: readFileSync(o.caFile),
      privateKey: o.keyFile ? readFileSync(o.keyFile) : undefined,
      certChain: o.certFile ? readFileSync(o.certFile) : undefined,
    };
  }
  if (!o.renewing) return new Etcd3(opts);
  const client = new Etcd3(opts);
  useChannelCredentials(client, o.renewing.channelCredentials);
  return client;
}

/**
 * etcd3 1.1.2 (pinned) builds one grpc-js ChannelCredentials from fixed buffers (ConnectionPool's
 * buildAuthentication: createSsl) and has no option to pass credentials of our own; a renewed certificate
 * would otherwise need a new client, and with it every watch and the lease moved over. So the credentials
 * each host dials with are replaced, before the first call opens a channel, by certificate-provider ones that
 * grpc-js reads per connection. The fields are checked, so an etcd3 that changed shape fails here, loudly.
 */
function useChannelCredentials(client: Etcd3, credentials: grpc.ChannelCredentials): void {
  const hosts: unknown = Reflect.get(Reflect.get(client, 'pool') ?? {}, 'hosts');
  const fresh = (h: unknown) => {
    if (typeof h !== 'object' || h === null) return false;
    const cached: unknown = Reflect.get(h, 'cachedServices');
    // No service client yet: no channel was made with the credentials being replaced.
    return Reflect.get(h, 'channelCredentials') instanceof grpc.ChannelCredentials && typeof cached === 'object' && cached !== null && Object.keys(cached).length === 0;
  };
  const ok = Array.isArray(hosts) && hosts.length > 0 && hosts.every(fresh);
  if (!ok) throw new Error('this etcd3 version keeps its channel credentials elsewhere than 1.1.2 (pool.hosts[].channelCredentials): a renewing identity cannot be given to it; pin etcd3 1.1.2 or adapt mesh/etcd.ts');
  for (const h of hosts) Reflect.set(h as object, 'channelCredentials', credentials);
}

/**
 * Bytes one list page aims at: half of gRPC's default 4 MiB receive limit, so a page whose values run up to
 * twice the size the limit was estimated from still arrives.
 */
export const PAGE_BUDGET_BYTES = 2 * 1024 * 1024;
/** Per key on the wire besides key and value: revisions, version, lease and protobuf framing. */
const KV_OVERHEAD_BYTES = 48;

const kvBytes = (kv: IKeyValue) => kv.key.length + kv.value.length + KV_OVERHEAD_BYTES;

/**
 * How many keys the next page asks for: as many as fit `budgetBytes` at the size per key seen so far, at
 * least 1 and at most `maxKeys`. The size per key is the larger of the running average and the last page's,
 * so a run of large values shrinks the next page at once instead of being averaged away.
 */
export function nextPageLimit(seen: { keys: number; bytes: number; lastKeys: number; lastBytes: number }, maxKeys: number, budgetBytes = PAGE_BUDGET_BYTES): number {
  const perKey = Math.max(seen.keys ? seen.bytes / seen.keys : 0, seen.lastKeys ? seen.lastBytes / seen.lastKeys : 0);
  if (perKey <= 0) return maxKeys;
  return Math.max(1, Math.min(maxKeys, Math.floor(budgetBytes / perKey)));
}

/** One page read of a range: up to `limit` keys from `start` on, at `revision` (undefined: the current one). */
interface PagedRange {
  page(start: Buffer, limit: number, revision: number | undefined): Promise<{ kvs: IKeyValue[]; more: boolean; revision: number }>;
  /** The first key from `start` on (keys only, so it is readable however large its value). */
  firstKey(start: Buffer, revision: number | undefined): Promise<string | undefined>;
}

/**
 * Every key of `range` from `start` on, page by page, all at one revision (the first page's, or
 * `atRevision`). Pages are bounded by keys (`maxKeys`) and by bytes (`budgetBytes`, see nextPageLimit); a
 * page that still exceeds a gRPC size limit is read again with half the keys, down to one key, and one key
 * too large to be read at all is an error naming it.
 */
async function listPaged(range: PagedRange, start: Buffer, o: { maxKeys: number; budgetBytes?: number; atRevision?: number }): Promise<{ kvs: IKeyValue[]; revision: number }> {
  const kvs: IKeyValue[] = [];
  const seen = { keys: 0, bytes: 0, lastKeys: 0, lastBytes: 0 };
  let revision = o.atRevision;
  for (;;) {
    let limit = nextPageLimit(seen, o.maxKeys, o.budgetBytes);
    let res: Awaited<ReturnType<PagedRange['page']>>;
    for (;;) {
      try {
        res = await range.page(start, limit, revision);
        break;
      } catch (err) {
        if (!isTooLargeError(err)) throw err;
        if (limit > 1) {
          limit = Math.floor(limit / 2);
          continue;
        }
        const key = await range.firstKey(start, revision);
        throw new Error(`etcd key ${key ?? `from ${start.toString()}`} cannot be read: its value alone exceeds gRPC's message size limit (${(err as Error).message}); delete or shrink that value`, { cause: err });
      }
    }
    revision ??= res.revision;
    kvs.push(...res.kvs);
    seen.lastKeys = res.kvs.length;
    seen.lastBytes = res.kvs.reduce((n, kv) => n + kvBytes(kv), 0);
    seen.keys += seen.lastKeys;
    seen.bytes += seen.lastBytes;
    if (!res.more || res.kvs.length === 0) return { kvs, revision };
    start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
  }
}

/**
 * Every key under `prefix` as one consistent snapshot: pages of at most `pageSize` keys and about
 * PAGE_BUDGET_BYTES (a response is capped by gRPC's 4 MiB receive limit), all read at the revision of the
 * first page (or at `atRevision`).
 */
export async function listPrefix(client: Etcd3, prefix: string, pageSize = 500, atRevision?: number): Promise<{ kvs: IKeyValue[]; revision: number }> {
  const end = Range.prefix(prefix).end;
  const range: PagedRange = {
    page: async (start, limit, revision) => {
      let q = client.getAll().inRange(new Range(start, end)).sort('Key', 'Ascend').limit(limit);
      if (revision !== undefined) q = q.revision(revision);
      const res = await q.exec();
      return { kvs: res.kvs, more: res.more, revision: Number(res.header.revision) };
    },
    firstKey: async (start, revision) => {
      let q = client.getAll().inRange(new Range(start, end)).sort('Key', 'Ascend').limit(1);
      if (revision !== undefined) q = q.revision(revision);
      return (await q.keys())[0];
    },
  };
  return listPaged(range, Buffer.from(prefix), { maxKeys: pageSize, atRevision });
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
    try {
      await c
        .if(ops[0]!.key, 'Version', '>', -1)
        .then(...ops.map((op) => (op.value === null ? c.delete().key(op.key) : c.put(op.key).value(op.value))))
        .commit();
    } catch (err) {
      // The writer splits such a batch (or refuses its single op) instead of retrying it as it is.
      if (isTooLargeError(err)) throw new BatchTooLargeError((err as Error).message);
      throw err;
    }
  }
}
