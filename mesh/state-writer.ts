// Keeps an etcd prefix equal to a desired key/value set while writing as little as possible: unchanged keys
// are never rewritten, changes are coalesced per key and committed in transactions bounded by operations
// (etcd's default --max-txn-ops, 128) and by bytes (below etcd's default --max-request-bytes, 1.5 MiB), and a
// failed batch is retried with backoff without losing newer changes. A value that can never be written is
// refused: dropped from the queue (so it never holds up later writes) and reported.
import { backoffDelay } from './backoff.js';
export interface KvOp {
  key: string;
  /** null deletes the key. */
  value: string | null;
}

export interface KvBackend {
  list(prefix: string): Promise<Map<string, string>>;
  /** Applies all ops atomically; throws BatchTooLargeError when etcd refuses the batch for its size. */
  apply(ops: KvOp[]): Promise<void>;
}

/**
 * etcd refused a batch for its size (--max-request-bytes, --max-txn-ops). Permanent for that batch: the
 * writer splits it, and refuses a single op that still does not fit, instead of retrying it forever.
 */
export class BatchTooLargeError extends Error {}

export interface WriterLimits {
  /** Operations per transaction (etcd's default --max-txn-ops). */
  maxOps: number;
  /** Key + value bytes per transaction. */
  maxBatchBytes: number;
  /** A larger value is refused, never sent. Below maxBatchBytes, so the largest value fits a batch. */
  maxValueBytes: number;
}

/**
 * 1 MiB a batch leaves a third of etcd's default 1.5 MiB --max-request-bytes for the protobuf framing and
 * the transaction's compare. 512 KiB a value fits one batch with room to spare and a few to a list page
 * (mesh/etcd.ts PAGE_BUDGET_BYTES, 2 MiB), and is far beyond any legitimate value: a global service with
 * 5,000 backends encodes to about 0.5 MiB.
 */
export const WRITE_LIMITS: Readonly<WriterLimits> = { maxOps: 128, maxBatchBytes: 1024 * 1024, maxValueBytes: 512 * 1024 };

const opBytes = (key: string, value: string | null) => Buffer.byteLength(key) + (value === null ? 0 : Buffer.byteLength(value));

export interface WriterHooks {
  onBatch?: (ops: number, seconds: number) => void;
  onError?: (err: unknown, attempt: number) => void;
  /**
   * A write refused: `bytes` (key + value) over `limit` (maxValueBytes), or `limit` undefined when etcd
   * itself refused the op alone as too large (`why` has its answer). etcd keeps what it had for the key; a
   * later different value is written normally.
   */
  onRefused?: (key: string, bytes: number, limit: number | undefined, why: string) => void;
}

/** A write the writer refused, for status. */
export interface RefusedWrite {
  key: string;
  bytes: number;
  why: string;
}

export class StateWriter {
  private readonly current = new Map<string, string>();
  private readonly desired = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private paused = true;
  private flushing = false;
  private idleWaiters: (() => void)[] = [];
  private attempt = 0;
  /** Refused keys whose refused value is still the desired one (a different value clears the entry). */
  private readonly refusedNow = new Map<string, RefusedWrite & { value: string | null }>();
  private readonly limits: WriterLimits;
  /** Lowered while etcd refuses batches for their size; back to the limits once the backlog is written. */
  private opsCap: number;
  private bytesCap: number;
  writes = 0;
  /** Writes refused since start (see refusedWrites for those still refused). */
  refused = 0;

  constructor(
    private readonly backend: KvBackend,
    private readonly hooks: WriterHooks = {},
    limits: Partial<WriterLimits> = {},
  ) {
    this.limits = { ...WRITE_LIMITS, ...limits };
    const { maxOps, maxBatchBytes, maxValueBytes } = this.limits;
    if (!(maxOps >= 1 && maxValueBytes >= 1 && maxValueBytes < maxBatchBytes)) {
      throw new Error(`StateWriter limits ${JSON.stringify(this.limits)}: need maxOps >= 1 and 1 <= maxValueBytes < maxBatchBytes (a value must fit one batch)`);
    }
    this.opsCap = maxOps;
    this.bytesCap = maxBatchBytes;
  }

  /** Loads what etcd holds under the prefixes this writer owns. Call once, before resume(). */
  async load(prefixes: string[]): Promise<void> {
    for (const p of prefixes) for (const [k, v] of await this.backend.list(p)) this.current.set(k, v);
  }

  set(key: string, value: string | null): void {
    if (value === null) this.desired.delete(key);
    else this.desired.set(key, value);
    const refused = this.refusedNow.get(key);
    if (refused && refused.value !== value) this.refusedNow.delete(key);
    // The value etcd already holds, or the very value refused before: nothing to write.
    if ((this.current.get(key) ?? null) === value || refused?.value === value) this.dirty.delete(key);
    else this.dirty.add(key);
    this.schedule();
  }

  /** Keys whose desired value was refused and is not in etcd (etcd keeps what it had). */
  refusedWrites(): RefusedWrite[] {
    return [...this.refusedNow.values()].map(({ key, bytes, why }) => ({ key, bytes, why }));
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
      const ops = this.nextBatch();
      if (ops.length === 0) continue; // every key taken was refused
      const t0 = performance.now();
      try {
        await this.backend.apply(ops);
      } catch (err) {
        if (err instanceof BatchTooLargeError) {
          this.split(ops, err);
          continue;
        }
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
    // A split learned for this backlog only: etcd's limits may be ours, and a batch of small values fits.
    this.opsCap = this.limits.maxOps;
    this.bytesCap = this.limits.maxBatchBytes;
    this.flushing = false;
    this.wake();
  }

  /**
   * The next batch from the queue, in queue order: up to opsCap ops and bytesCap bytes (always at least one
   * op, so a value near maxValueBytes still goes alone). Values over maxValueBytes are refused on the way.
   */
  private nextBatch(): KvOp[] {
    const ops: KvOp[] = [];
    let bytes = 0;
    for (const key of this.dirty) {
      const value = this.desired.get(key) ?? null;
      const size = opBytes(key, value);
      if (value !== null && Buffer.byteLength(value) > this.limits.maxValueBytes) {
        this.refuse(key, value, size, this.limits.maxValueBytes, `value of ${Buffer.byteLength(value)} bytes is over the ${this.limits.maxValueBytes}-byte limit per value`);
        continue;
      }
      if (ops.length > 0 && (ops.length >= this.opsCap || bytes + size > this.bytesCap)) break;
      ops.push({ key, value });
      bytes += size;
    }
    return ops;
  }

  /**
   * etcd refused `ops` for their size: the next batches take half as many ops and bytes, down to one op;
   * one op refused alone can never be written and is refused here.
   */
  private split(ops: KvOp[], err: BatchTooLargeError): void {
    if (ops.length === 1) {
      const { key, value } = ops[0]!;
      // Only if still the value etcd refused: a newer one is written (or refused) on its own merits.
      if ((this.desired.get(key) ?? null) === value) this.refuse(key, value, opBytes(key, value), undefined, `etcd refused it as too large: ${err.message}`);
      return;
    }
    const bytes = ops.reduce((n, op) => n + opBytes(op.key, op.value), 0);
    this.opsCap = Math.ceil(ops.length / 2);
    this.bytesCap = Math.max(1, Math.ceil(bytes / 2));
  }

  private refuse(key: string, value: string | null, bytes: number, limit: number | undefined, why: string): void {
    this.dirty.delete(key);
    this.refused++;
    this.refusedNow.set(key, { key, value, bytes, why });
    this.hooks.onRefused?.(key, bytes, limit, why);
  }
}
