// Keeps an etcd prefix equal to a desired key/value set while writing as little as possible: unchanged keys
// are never rewritten, changes are coalesced per key and committed in transactions of up to 128 operations
// (etcd's default --max-txn-ops), and a failed batch is retried with backoff without losing newer changes.
import { backoffDelay } from './backoff.js';
export interface KvOp {
  key: string;
  /** null deletes the key. */
  value: string | null;
}

export interface KvBackend {
  list(prefix: string): Promise<Map<string, string>>;
  /** Applies all ops atomically. */
  apply(ops: KvOp[]): Promise<void>;
}

export interface WriterHooks {
  onBatch?: (ops: number, seconds: number) => void;
  onError?: (err: unknown, attempt: number) => void;
}

export class StateWriter {
  private readonly current = new Map<string, string>();
  private readonly desired = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private paused = true;
  private flushing = false;
  private idleWaiters: (() => void)[] = [];
  private attempt = 0;
  writes = 0;

  constructor(
    private readonly backend: KvBackend,
    private readonly hooks: WriterHooks = {},
    private readonly maxBatch = 128,
  ) {}

  /** Loads what etcd holds under the prefixes this writer owns. Call once, before resume(). */
  async load(prefixes: string[]): Promise<void> {
    for (const p of prefixes) for (const [k, v] of await this.backend.list(p)) this.current.set(k, v);
  }

  set(key: string, value: string | null): void {
    if (value === null) this.desired.delete(key);
    else this.desired.set(key, value);
    if ((this.current.get(key) ?? null) === value) this.dirty.delete(key);
    else this.dirty.add(key);
    this.schedule();
  }

  desiredKeys(prefix: string): string[] {
    return [...this.desired.keys()].filter((k) => k.startsWith(prefix));
  }

  get(key: string): string | undefined {
    return this.desired.get(key);
  }

  /** After the initial sync: everything held under `prefix` that nobody asked for is stale. */
  pruneUnder(prefix: string): number {
    let n = 0;
    for (const key of this.current.keys()) {
      if (key.startsWith(prefix) && !this.desired.has(key)) {
        this.dirty.add(key);
        n++;
      }
    }
    this.schedule();
    return n;
  }

  /**
   * Makes everything under `prefix` equal `entries` (a relist): keys not in it are deleted, the rest set.
   * Only real differences reach etcd, so a relist never flaps a key through delete-then-add.
   */
  replaceUnder(prefix: string, entries: Map<string, string>): void {
    for (const key of new Set([...this.desired.keys(), ...this.current.keys()])) {
      if (key.startsWith(prefix) && !entries.has(key)) this.set(key, null);
    }
    for (const [k, v] of entries) this.set(k, v);
  }

  resume(): void {
    this.paused = false;
    this.schedule();
  }

  get backlog(): number {
    return this.dirty.size;
  }

  /** Resolves when every change made so far is in etcd. */
  idle(): Promise<void> {
    if (this.dirty.size === 0 && !this.flushing) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private schedule(): void {
    if (this.paused || this.flushing || this.dirty.size === 0) {
      if (!this.flushing && this.dirty.size === 0) this.wake();
      return;
    }
    this.flushing = true;
    setImmediate(() => void this.flush());
  }

  private wake(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }

  private async flush(): Promise<void> {
    while (this.dirty.size > 0) {
      const ops: KvOp[] = [];
      for (const key of this.dirty) {
        ops.push({ key, value: this.desired.get(key) ?? null });
        if (ops.length >= this.maxBatch) break;
      }
      const t0 = performance.now();
      try {
        await this.backend.apply(ops);
      } catch (err) {
        this.attempt += 1;
        this.hooks.onError?.(err, this.attempt);
        await new Promise((r) => setTimeout(r, backoffDelay(this.attempt, { minMs: 100, maxMs: 5_000 })));
        continue;
      }
      this.attempt = 0;
      this.hooks.onBatch?.(ops.length, (performance.now() - t0) / 1000);
      this.writes += ops.length;
      for (const op of ops) {
        if (op.value === null) this.current.delete(op.key);
        else this.current.set(op.key, op.value);
        // A newer set() during the write left the key dirty with another value; keep it queued then.
        if ((this.desired.get(op.key) ?? null) === op.value) this.dirty.delete(op.key);
      }
    }
    this.flushing = false;
    this.wake();
  }
}
