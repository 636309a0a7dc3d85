// Replicates one remote cluster's export into the local mesh etcd's cache prefix. Full list at a known
// revision, then a watch from revision + 1; the etcd3 client resumes the watch after a disconnect; after a
// compaction (or any watch failure) it relists and diffs against the cache, so only real changes are
// written. Nothing from the remote is trusted: keys outside its own export prefix, values that fail their
// schema or name another cluster are rejected, counted and logged, and never reach the cache; so are
// addresses and identities the peer may not claim (address-policy.ts: the pod CIDRs and cluster ID
// `skein connect` pinned, never loopback/link-local/…, never this cluster's own networks).
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { connectMeshEtcd, EtcdKv, listPrefix, type EtcdRef } from '../mesh/etcd.js';
import { X509Certificate } from 'node:crypto';
import { cachePrefix, exportPrefix, keys, parseExportKey, ROOT, type ParsedKey } from '../mesh/schema/keys.js';
import { decodeValue, encodeValue, SyncStatus, type ClusterConfig, type ExportValue } from '../mesh/schema/values.js';
import { LocalNetworks, PeerPolicy, type RejectReason, type Rejection } from '../mesh/address-policy.js';
import type { RemoteStatus } from '../mesh/status.js';
import { StateWriter } from '../mesh/state-writer.js';
import { Credential, credentialKey } from '../mesh/credentials.js';

export interface RemoteSpec {
  name: string;
  id: number;
  endpoint: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** The peer's pod CIDRs as `skein connect` pinned them: all it may claim pod addresses in. */
  podCidrs: string[];
}

export interface RemoteSyncOptions {
  local: EtcdRef;
  localCluster: string;
  remote: RemoteSpec;
  /** Called after switching to a renewed identity, so it can be stored for the next start. */
  onCredentials?: (cred: Credential) => void;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
  /** A remote whose heartbeat is older than this is stale (kept, flagged). */
  staleAfterMs?: number;
  /** A remote stale for this long has its cached state removed (0: never). */
  removeAfterMs?: number;
  /** This cluster's own pod and Service CIDRs, which no peer may claim (default: none known). */
  localNetworks?: LocalNetworks;
  /** Called once per rejected key (for metrics). */
  onRejected?: (reason: RejectReason) => void;
}

/**
 * Cancels a watcher without hanging: a watch the server already dropped (compaction) may never confirm
 * its cancellation, and the relist must not wait on it.
 */
async function cancelWatcher(w: Watcher | undefined): Promise<void> {
  if (!w) return;
  await Promise.race([w.cancel().catch(() => {}), new Promise((r) => setTimeout(r, 1_000))]);
}

/** Where the sync engine publishes each remote's health for the local agents. */


export class RemoteSync {
  private client?: Etcd3;
  private watcher?: Watcher;
  private credWatcher?: Watcher;
  private remote: RemoteSpec;
  private rotations = 0;
  private rotating = false;
  private readonly writer: StateWriter;
  private readonly cachePfx: string;
  private readonly exportPfx: string;
  private revision = 0;
  private headRevision = 0;
  private connected = false;
  private synced = false;
  private stopped = false;
  private rejected = 0;
  private readonly rejectedByReason: Partial<Record<RejectReason, number>> = {};
  private readonly policy: PeerPolicy;
  private advertisedBeyondPin?: string[];
  private relists = 0;
  private lastError?: string;
  private lastHeartbeat?: number;
  private timer?: NodeJS.Timeout;
  private restarting = false;
  private published = '';
  private readonly counts = { services: 0, identities: 0, nodes: 0, ips: 0 };

  constructor(private readonly o: RemoteSyncOptions) {
    this.remote = o.remote;
    this.writer = new StateWriter(new EtcdKv(o.local), { onError: (err) => (this.lastError = `local etcd: ${(err as Error).message}`) });
    this.cachePfx = cachePrefix(o.remote.name);
    this.exportPfx = exportPrefix(o.remote.name);
    this.policy = new PeerPolicy(o.remote, o.localNetworks ?? new LocalNetworks(o.localCluster));
  }

  get spec(): RemoteSpec {
    return this.remote;
  }

  async start(): Promise<void> {
    await this.writer.load([this.cachePfx]);
    await this.dropInvalidCache();
    this.client = this.connectWith(this.remote);
    this.timer = setInterval(() => void this.publishStatus(), 2_000);
    this.timer.unref();
    void this.run();
  }

  /** List, apply, watch; on failure back off and do it again. */
  private async run(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.relistAndWatch();
        return;
      } catch (err) {
        this.connected = false;
        this.lastError = (err as Error).message;
        if (attempt === 0 || attempt % 10 === 0) this.o.log.warn({ remote: this.remote.name, err: this.lastError, attempt }, 'remote sync failed, retrying');
        await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** Math.min(attempt, 5), 5_000)));
      }
    }
  }

  private async relistAndWatch(): Promise<void> {
    const res = await listPrefix(this.client!, this.exportPfx);
    this.connected = true;
    this.relists++;
    const entries = new Map<string, string>();
    for (const kv of res.kvs) {
      const accepted = this.accept(kv);
      if (accepted) entries.set(accepted.cacheKey, accepted.value);
    }
    this.revision = res.revision;
    this.headRevision = this.revision;
    this.writer.replaceUnder(this.cachePfx, entries);
    this.writer.resume();
    await this.writer.idle();
    this.recount();
    if (!this.synced) this.o.log.info({ remote: this.remote.name, keys: entries.size, revision: this.revision }, 'remote initial sync done');
    this.synced = true;
    this.lastError = undefined;
    await this.publishStatus();

    this.watcher = await this.openWatch(this.client!, this.revision + 1);
    await this.watchCredentials();
  }

  private connectWith(r: RemoteSpec): Etcd3 {
    return connectMeshEtcd({ endpoints: [r.endpoint], tls: { caPem: r.caPem, certPem: r.certPem, keyPem: r.keyPem } });
  }

  private async openWatch(client: Etcd3, fromRevision: number): Promise<Watcher> {
    const watcher = await client.watch().prefix(this.exportPfx).startRevision(String(fromRevision)).create();
    watcher.on('connected', () => (this.connected = true));
    watcher.on('disconnected', () => (this.connected = false));
    watcher.on('data', (r) => (this.headRevision = Math.max(this.headRevision, Number(r.header.revision))));
    watcher.on('put', (kv) => {
      const a = this.accept(kv);
      if (a) this.writer.set(a.cacheKey, a.value);
      // A key that fails now loses its cached copy too. Keeping the last good value would let a peer hold
      // on to state it no longer vouches for while claiming something else, and would leave the watch
      // disagreeing with what a relist (which caches accepted keys only) computes; dropping it fails closed:
      // clients lose that peer's backends for this service, never reach an address it may not claim.
      else if (kv.key.toString().startsWith(this.exportPfx)) this.writer.set(this.toCache(kv.key.toString()), null);
      this.applied(kv);
    });
    watcher.on('delete', (kv) => {
      const parsed = parseExportKey(kv.key.toString());
      if (parsed?.cluster === this.remote.name) this.writer.set(this.toCache(kv.key.toString()), null);
      this.applied(kv);
    });
    watcher.on('error', (err) => {
      // Compaction (or a dropped watch the client gave up on): relist and diff, then watch again.
      this.lastError = err.message;
      this.o.log.warn({ remote: this.remote.name, err: err.message }, 'remote watch failed, relisting');
      void this.restart();
    });
    return watcher;
  }

  /** The remote re-issues our identity at half-life under a key only we can read. */
  private async watchCredentials(): Promise<void> {
    const key = credentialKey(this.remote.name, this.o.localCluster);
    const old = this.credWatcher;
    this.credWatcher = undefined;
    old?.removeAllListeners();
    await cancelWatcher(old);
    const w = await this.client!.watch().key(key).create();
    this.credWatcher = w;
    w.on('put', (kv) => void this.adopt(kv.value.toString()));
    // A failed credential watch is replaced by the next relist's; the export watch reports the outage.
    w.on('error', () => {});
    const current = await this.client!.get(key).string().catch(() => null);
    if (current) await this.adopt(current);
  }

  /** Switches to a renewed identity: new client, watch resumed from the last applied revision, no relist. */
  async adopt(raw: string | Credential): Promise<void> {
    const parsed = typeof raw === 'string' ? Credential.safeParse(JSON.parse(raw)) : Credential.safeParse(raw);
    if (!parsed.success || parsed.data.certPem === this.remote.certPem || this.rotating || this.stopped || !this.synced) return;
    this.rotating = true;
    const next = { ...this.remote, certPem: parsed.data.certPem, keyPem: parsed.data.keyPem };
    const client = this.connectWith(next);
    try {
      await client.get(keys.config(this.remote.name)).string();
      const watcher = await this.openWatch(client, this.revision + 1);
      const [oldClient, oldWatcher] = [this.client, this.watcher];
      this.client = client;
      this.watcher = watcher;
      this.remote = next;
      oldWatcher?.removeAllListeners();
      await cancelWatcher(oldWatcher);
      oldClient?.close();
      await this.watchCredentials();
      this.rotations++;
      this.o.log.info({ remote: this.remote.name, expires: this.identityExpires }, 'switched to a renewed identity');
      this.o.onCredentials?.(parsed.data);
    } catch (err) {
      client.close();
      this.lastError = `identity renewal: ${(err as Error).message}`;
    } finally {
      this.rotating = false;
    }
  }

  private get identityExpires(): string | undefined {
    try {
      return new Date(new X509Certificate(this.remote.certPem).validTo).toISOString();
    } catch {
      return undefined;
    }
  }

  private async restart(): Promise<void> {
    if (this.restarting || this.stopped) return;
    this.restarting = true;
    this.connected = false;
    const old = this.watcher;
    this.watcher = undefined;
    old?.removeAllListeners();
    await cancelWatcher(old);
    try {
      await this.run();
    } finally {
      this.restarting = false;
    }
  }

  private applied(kv: IKeyValue): void {
    this.revision = Math.max(this.revision, Number(kv.mod_revision));
    this.recountSoon();
  }

  private toCache(key: string): string {
    return this.cachePfx + key.slice(this.exportPfx.length);
  }

  private accept(kv: IKeyValue): { cacheKey: string; value: string } | undefined {
    const key = kv.key.toString();
    const value = kv.value.toString();
    const verdict = this.judge(key, value);
    if (!verdict.ok) {
      this.reject(key, verdict.rejection);
      return undefined;
    }
    if (verdict.parsed.kind === 'heartbeat') this.lastHeartbeat = Date.parse((verdict.value as { at: string }).at);
    if (verdict.parsed.kind === 'config') this.advertisedBeyondPin = this.policy.beyondPin(verdict.value as ClusterConfig);
    return { cacheKey: this.toCache(key), value };
  }

  /** Whether a remote key may be cached (by its key in the remote's export): decoded, or why not. */
  private judge(key: string, raw: string): { ok: true; parsed: ParsedKey; value: ExportValue } | { ok: false; rejection: Rejection } {
    const no = (reason: Rejection['reason'], detail: string) => ({ ok: false as const, rejection: { reason, detail } });
    const parsed = parseExportKey(key);
    if (!parsed || !key.startsWith(this.exportPfx)) return no('foreign-key', 'key is outside the remote export schema');
    if (parsed.cluster !== this.remote.name) return no('foreign-key', `key claims cluster ${parsed.cluster}, connection is to ${this.remote.name}`);
    const d = decodeValue(parsed, raw);
    if (!d.ok) return no('schema', d.error);
    const refused = this.policy.check(parsed, d.value);
    return refused ? { ok: false, rejection: refused } : { ok: true, parsed, value: d.value };
  }

  private reject(key: string, r: Rejection): void {
    this.rejected++;
    this.rejectedByReason[r.reason] = (this.rejectedByReason[r.reason] ?? 0) + 1;
    this.o.onRejected?.(r.reason);
    this.o.log.warn({ remote: this.remote.name, key, reason: r.reason, why: r.detail }, 'rejected a remote key');
  }

  private toExport(cacheKey: string): string {
    return this.exportPfx + cacheKey.slice(this.cachePfx.length);
  }

  /**
   * Checks every cached key again and drops those that fail now: this cluster's own networks grew into
   * what they claim (call after LocalNetworks changed).
   */
  revalidate(): void {
    for (const cacheKey of this.writer.desiredKeys(this.cachePfx)) {
      const value = this.writer.get(cacheKey);
      const verdict = value === undefined ? undefined : this.judge(this.toExport(cacheKey), value);
      if (!verdict || verdict.ok) continue;
      this.reject(this.toExport(cacheKey), verdict.rejection);
      this.writer.set(cacheKey, null);
    }
    this.recountSoon();
  }

  /**
   * At start, before the remote answers: drops cached keys that this sync's pin and policy refuse (left by
   * an older version or a wider pin), so an unreachable peer cannot keep them in the datapath.
   */
  private async dropInvalidCache(): Promise<void> {
    const cached = await listPrefix(this.o.local(), this.cachePfx).catch(() => undefined);
    let dropped = 0;
    for (const kv of cached?.kvs ?? []) {
      const cacheKey = kv.key.toString();
      const verdict = this.judge(this.toExport(cacheKey), kv.value.toString());
      if (verdict.ok) continue;
      this.reject(this.toExport(cacheKey), verdict.rejection);
      this.writer.set(cacheKey, null);
      dropped++;
    }
    // Deletes only those keys; everything else waits for the first relist as before.
    if (dropped) this.writer.resume();
  }

  private recountTimer?: NodeJS.Timeout;
  private recountSoon(): void {
    this.recountTimer ??= setTimeout(() => {
      this.recountTimer = undefined;
      this.recount();
    }, 100);
  }

  private recount(): void {
    for (const kind of Object.keys(this.counts) as (keyof typeof this.counts)[]) this.counts[kind] = 0;
    for (const k of this.writer.desiredKeys(this.cachePfx)) {
      const kind = k.slice(this.cachePfx.length).split('/', 1)[0] as keyof typeof this.counts;
      if (kind in this.counts) this.counts[kind]++;
    }
  }

  get stale(): boolean {
    return this.synced && (this.lastHeartbeat === undefined || Date.now() - this.lastHeartbeat > (this.o.staleAfterMs ?? 20_000));
  }

  status(): RemoteStatus {
    return {
      cluster: this.remote.name,
      id: this.remote.id,
      endpoint: this.remote.endpoint,
      connected: this.connected,
      synced: this.synced,
      stale: this.stale,
      lastHeartbeat: this.lastHeartbeat ? new Date(this.lastHeartbeat).toISOString() : undefined,
      revision: this.revision,
      revisionLag: Math.max(0, this.headRevision - this.revision) + this.writer.backlog,
      ...this.counts,
      rejected: this.rejected,
      rejectedByReason: { ...this.rejectedByReason },
      pinnedPodCidrs: this.remote.podCidrs,
      advertisedBeyondPin: this.advertisedBeyondPin?.length ? this.advertisedBeyondPin : undefined,
      relists: this.relists,
      rotations: this.rotations,
      identityExpires: this.identityExpires,
      lastError: this.lastError,
    };
  }

  /** Health for the datapath: stale state is kept but flagged; after the grace it is removed. */
  private async publishStatus(): Promise<void> {
    const s = this.status();
    const removeAfter = this.o.removeAfterMs ?? 0;
    if (removeAfter > 0 && s.stale && this.lastHeartbeat !== undefined && Date.now() - this.lastHeartbeat > removeAfter) {
      this.writer.replaceUnder(this.cachePfx, new Map());
    }
    // Only what the datapath acts on, and only when it changes: every write wakes every agent of the cluster.
    const value = encodeValue(SyncStatus, { cluster: s.cluster, connected: s.connected, synced: s.synced, stale: s.stale });
    if (value === this.published) return;
    try {
      await this.o.local().put(keys.syncStatus(this.remote.name)).value(value);
      this.published = value;
    } catch {
      /* the local etcd is down: published stays stale, the next tick retries */
    }
  }

  /** Stops replicating; with `removeCache` (disconnect) the remote's cached state is deleted too. */
  async stop(removeCache: boolean): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.recountTimer) clearTimeout(this.recountTimer);
    await cancelWatcher(this.watcher);
    await cancelWatcher(this.credWatcher);
    this.client?.close();
    if (removeCache) {
      this.writer.resume();
      this.writer.replaceUnder(this.cachePfx, new Map());
      await this.writer.idle();
      await this.o.local().delete().key(keys.syncStatus(this.remote.name)).catch(() => {});
    }
  }
}

