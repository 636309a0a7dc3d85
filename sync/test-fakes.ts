// In-memory stand-ins for what the sync units talk to, behind the project's own interfaces: a peer's mesh
// etcd as PeerSource connections (a list at a revision, watches from a revision that replay its history,
// compaction, outages, identities it stops accepting), the local mesh etcd as the StateWriter's KvBackend,
// and its leases as lease holders use etcd3 (MemoryLeaseEtcd, shared with the mesh tests). For the unit
// tests; nothing here runs in production.
import type { KvBackend, KvOp } from '../mesh/state-writer.js';
import type { RemoteSpec } from './peer-connection.js';
import type { PeerKv, PeerSource, PeerWatch, PrefixWatchHandlers } from './peer-source.js';

export const COMPACTED = 'etcdserver: mvcc: required revision has been compacted';

interface Watch {
  matches: (key: string) => boolean;
  next: number;
  h: PrefixWatchHandlers;
  source: MemorySource;
}

/** A peer's mesh etcd: one revision counter, a history watches replay from, compaction, outages. */
export class MemoryPeer {
  revision = 1;
  private compacted = 0;
  private offline = false;
  private readonly data = new Map<string, PeerKv>();
  private history: { type: 'put' | 'delete'; kv: PeerKv }[] = [];
  readonly watches = new Set<Watch>();
  /** The certificate of every connection made, in order. */
  readonly connections: MemorySource[] = [];
  /** Certificates this peer no longer accepts. */
  readonly refused = new Set<string>();

  connect = (spec: RemoteSpec): PeerSource => {
    const s = new MemorySource(this, spec.certPem);
    this.connections.push(s);
    return s;
  };

  put(key: string, value: string): void {
    const kv = { key, value, modRevision: ++this.revision };
    this.data.set(key, kv);
    this.history.push({ type: 'put', kv });
    this.deliver();
  }

  delete(key: string): void {
    if (!this.data.delete(key)) return;
    this.history.push({ type: 'delete', kv: { key, value: '', modRevision: ++this.revision } });
    this.deliver();
  }

  /** Forgets the history up to now: a watch from an older revision fails. */
  compact(): void {
    this.compacted = this.revision;
    this.history = this.history.filter((e) => e.kv.modRevision >= this.compacted);
  }

  /** Unreachable: calls fail, watches hear nothing (and resume where they were once it is back). */
  setOffline(offline: boolean): void {
    this.offline = offline;
    for (const w of this.watches) w.h.link(!offline);
    this.deliver();
  }

  /** Why a call over `source` fails now, if it does. */
  refusal(source: MemorySource): Error | undefined {
    if (source.closed) return new Error('client closed');
    if (this.offline) return new Error('14 UNAVAILABLE: connect ECONNREFUSED');
    if (this.refused.has(source.certPem)) return new Error('7 PERMISSION_DENIED: bad certificate');
    return undefined;
  }

  list(prefix: string): { kvs: PeerKv[]; revision: number } {
    const kvs = [...this.data.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
    return { kvs, revision: this.revision };
  }

  get(key: string): string | null {
    return this.data.get(key)?.value ?? null;
  }

  deliver(): void {
    if (this.offline) return;
    for (const w of [...this.watches]) {
      if (w.next < this.compacted) {
        this.watches.delete(w);
        setImmediate(() => w.h.failed(new Error(COMPACTED)));
        continue;
      }
      for (const e of this.history) {
        if (e.kv.modRevision < w.next || !w.matches(e.kv.key)) continue;
        w.h.progress(e.kv.modRevision);
        w.h[e.type](e.kv);
      }
      w.next = this.revision + 1;
    }
  }
}

class MemorySource implements PeerSource {
  closed = false;
  constructor(
    private readonly peer: MemoryPeer,
    readonly certPem: string,
  ) {}

  list(prefix: string): Promise<{ kvs: PeerKv[]; revision: number }> {
    return this.call(() => this.peer.list(prefix));
  }

  watch(prefix: string, fromRevision: number, h: PrefixWatchHandlers): Promise<PeerWatch> {
    return this.call(() => this.open({ matches: (k) => k.startsWith(prefix), next: fromRevision, h, source: this }));
  }

  get(key: string): Promise<string | null> {
    return this.call(() => this.peer.get(key));
  }

  watchKey(key: string, onPut: (value: string) => void): Promise<PeerWatch> {
    const ignore = () => undefined;
    const h = { put: (kv: PeerKv) => onPut(kv.value), delete: ignore, progress: ignore, link: ignore, failed: ignore };
    return this.call(() => this.open({ matches: (k) => k === key, next: this.peer.revision + 1, h, source: this }));
  }

  close(): void {
    this.closed = true;
    for (const w of this.peer.watches) if (w.source === this) this.peer.watches.delete(w);
  }

  /** Like a client call: fails when closed, the peer is down or refuses this identity. */
  private call<T>(fn: () => T): Promise<T> {
    const refused = this.peer.refusal(this);
    return refused ? Promise.reject(refused) : Promise.resolve(fn());
  }

  private open(w: Watch): PeerWatch {
    this.peer.watches.add(w);
    this.peer.deliver();
    return {
      cancel: () => {
        this.peer.watches.delete(w);
        return Promise.resolve();
      },
    };
  }
}

/** The local mesh etcd: what it holds and every batch written to it. */
export class MemoryKv implements KvBackend {
  readonly data = new Map<string, string>();
  readonly batches: KvOp[][] = [];
  list(prefix: string): Promise<Map<string, string>> {
    return Promise.resolve(new Map([...this.data].filter(([k]) => k.startsWith(prefix))));
  }
  apply(ops: KvOp[]): Promise<void> {
    this.batches.push(ops);
    for (const op of ops) {
      if (op.value === null) this.data.delete(op.key);
      else this.data.set(op.key, op.value);
    }
    return Promise.resolve();
  }
  writesSince(batch: number): string[] {
    return this.batches.slice(batch).flat().map((op) => `${op.key}=${op.value === null ? 'deleted' : 'set'}`).sort();
  }
}

export { MemoryLeaseEtcd } from '../mesh/testing/memory-lease-etcd.js';
