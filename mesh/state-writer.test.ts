import { describe, expect, it } from 'vitest';
import { BatchTooLargeError, StateWriter, type KvBackend, type KvOp } from './state-writer.js';

class MemoryKv implements KvBackend {
  data = new Map<string, string>();
  batches: KvOp[][] = [];
  failNext = 0;
  async list(prefix: string) {
    return new Map([...this.data].filter(([k]) => k.startsWith(prefix)));
  }
  async apply(ops: KvOp[]) {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('etcd unavailable');
    }
    this.batches.push(ops);
    for (const op of ops) {
      if (op.value === null) this.data.delete(op.key);
      else this.data.set(op.key, op.value);
    }
  }
}

describe('StateWriter', () => {
  it('writes only changes, and prunes stale keys only when told after the initial sync', async () => {
    const kv = new MemoryKv();
    kv.data.set('/p/same', '1');
    kv.data.set('/p/changed', 'old');
    kv.data.set('/p/stale', 'x');
    kv.data.set('/other/keep', 'y');
    const w = new StateWriter(kv);
    await w.load(['/p/']);
    w.set('/p/same', '1');
    w.set('/p/changed', 'new');
    w.set('/p/added', 'a');
    w.resume();
    await w.idle();
    expect(kv.data.get('/p/stale')).toBe('x');
    expect(w.pruneUnder('/p/')).toBe(1);
    await w.idle();
    expect(Object.fromEntries(kv.data)).toEqual({ '/p/same': '1', '/p/changed': 'new', '/p/added': 'a', '/other/keep': 'y' });
    expect(kv.batches.flat().map((o) => o.key).sort()).toEqual(['/p/added', '/p/changed', '/p/stale']);
  });

  it('batches at most maxBatch ops per transaction and coalesces repeated sets of one key', async () => {
    const kv = new MemoryKv();
    const w = new StateWriter(kv, {}, { maxOps: 10 });
    for (let i = 0; i < 25; i++) w.set(`/k/${i}`, 'a');
    for (let i = 0; i < 25; i++) w.set(`/k/${i}`, 'b');
    w.resume();
    await w.idle();
    expect(kv.batches.map((b) => b.length)).toEqual([10, 10, 5]);
    expect([...kv.data.values()].every((v) => v === 'b')).toBe(true);
  });

  it('retries a failed batch and keeps the newest value', async () => {
    const kv = new MemoryKv();
    kv.failNext = 2;
    const errors: number[] = [];
    const w = new StateWriter(kv, { onError: (_e, n) => errors.push(n) });
    w.resume();
    w.set('/k', 'v1');
    w.set('/k', 'v2');
    await w.idle();
    expect(errors).toEqual([1, 2]);
    expect(kv.data.get('/k')).toBe('v2');
  });

  it('setting a key back to what etcd holds cancels the pending write', async () => {
    const kv = new MemoryKv();
    kv.data.set('/k', 'v');
    const w = new StateWriter(kv);
    await w.load(['/']);
    w.set('/k', 'other');
    w.set('/k', 'v');
    expect(w.backlog).toBe(0);
    w.resume();
    await w.idle();
    expect(kv.batches).toEqual([]);
  });
});

describe('StateWriter.replaceUnder', () => {
  it('turns a prefix into exactly the new set, writing only the differences', async () => {
    const kv = new MemoryKv();
    for (const [k, v] of [['/c/a', '1'], ['/c/b', '2'], ['/c/gone', 'x'], ['/d/other', 'y']]) kv.data.set(k!, v!);
    const w = new StateWriter(kv);
    await w.load(['/c/']);
    w.resume();
    w.replaceUnder('/c/', new Map([['/c/a', '1'], ['/c/b', '3'], ['/c/new', '4']]));
    await w.idle();
    expect(Object.fromEntries(kv.data)).toEqual({ '/c/a': '1', '/c/b': '3', '/c/new': '4', '/d/other': 'y' });
    expect(kv.batches.flat().map((o) => `${o.key}=${o.value}`).sort()).toEqual(['/c/b=3', '/c/gone=null', '/c/new=4']);
  });
});

/** Key + value bytes of a batch, as the writer bounds it. */
const batchBytes = (ops: KvOp[]) => ops.reduce((n, op) => n + Buffer.byteLength(op.key) + Buffer.byteLength(op.value ?? ''), 0);

/** Like etcd with a request limit: refuses a transaction over `maxBytes` or `maxOps` for its size. */
class LimitedKv extends MemoryKv {
  refusedBatches: KvOp[][] = [];
  constructor(
    private readonly maxBytes: number,
    private readonly maxOps = Infinity,
  ) {
    super();
  }
  override async apply(ops: KvOp[]) {
    if (batchBytes(ops) > this.maxBytes) {
      this.refusedBatches.push(ops);
      throw new BatchTooLargeError('etcdserver: request is too large');
    }
    if (ops.length > this.maxOps) {
      this.refusedBatches.push(ops);
      throw new BatchTooLargeError('etcdserver: too many operations in txn request');
    }
    await super.apply(ops);
  }
}

describe('StateWriter size limits', () => {
  const limits = { maxOps: 10, maxBatchBytes: 1_000, maxValueBytes: 500 };

  it('bounds a batch by ops and by key + value bytes', async () => {
    const kv = new MemoryKv();
    const w = new StateWriter(kv, {}, limits);
    // 12 small ops: the op count bounds them.
    for (let i = 10; i < 22; i++) w.set(`/s/${i}`, 'v');
    w.resume();
    await w.idle();
    expect(kv.batches.map((b) => b.length)).toEqual([10, 2]);
    // 12 ops of 200 bytes each (5-byte key + 195-byte value): the bytes bound them, five to a batch.
    kv.batches = [];
    for (let i = 10; i < 22; i++) w.set(`/b/${i}`, 'x'.repeat(195));
    await w.idle();
    expect(kv.batches.map((b) => b.length)).toEqual([5, 5, 2]);
    expect(kv.batches.every((b) => batchBytes(b) <= limits.maxBatchBytes)).toBe(true);
    expect([...kv.data.keys()].filter((k) => k.startsWith('/b/'))).toHaveLength(12);
  });

  it('refuses a value over maxValueBytes without blocking later writes, and writes a later smaller one', async () => {
    const kv = new MemoryKv();
    kv.data.set('/big', 'old');
    const refused: [string, number, number | undefined][] = [];
    const w = new StateWriter(kv, { onRefused: (key, bytes, limit) => refused.push([key, bytes, limit]) }, limits);
    await w.load(['/']);
    w.resume();
    w.set('/big', 'x'.repeat(600));
    w.set('/after', 'a');
    await w.idle();
    expect(refused).toEqual([['/big', 604, 500]]);
    expect(Object.fromEntries(kv.data)).toEqual({ '/big': 'old', '/after': 'a' }); // never sent: etcd keeps what it had
    expect(kv.batches.flat().map((op) => op.key)).toEqual(['/after']);
    expect(w.refused).toBe(1);
    expect(w.refusedWrites()).toEqual([{ key: '/big', bytes: 604, why: expect.stringContaining('over the 500-byte limit') }]);
    expect(w.backlog).toBe(0);

    // The same refused value again is no news; a smaller one is written and clears the refusal.
    w.set('/big', 'x'.repeat(600));
    await w.idle();
    expect(w.refused).toBe(1);
    w.set('/big', 'small');
    await w.idle();
    expect(kv.data.get('/big')).toBe('small');
    expect(w.refusedWrites()).toEqual([]);
  });

  it('splits a batch etcd refuses for its size instead of retrying it, and refuses one op etcd refuses alone', async () => {
    const kv = new LimitedKv(300); // etcd's request limit below the writer's batch bound
    const errors: unknown[] = [];
    const refused: [string, number | undefined][] = [];
    const w = new StateWriter(kv, { onError: (err) => errors.push(err), onRefused: (key, _bytes, limit) => refused.push([key, limit]) }, limits);
    w.resume();
    for (let i = 10; i < 18; i++) w.set(`/k/${i}`, 'x'.repeat(95)); // 100 bytes each: 800 in one batch
    w.set('/k/alone', 'y'.repeat(400)); // under maxValueBytes, over what this etcd takes in any request
    w.set('/k/last', 'z');
    await w.idle();
    expect(batchBytes(kv.refusedBatches[0]!)).toBe(800); // the writer's first batch (its 1,000-byte bound), too large for this etcd
    expect([...kv.data.keys()].sort()).toEqual([...Array.from({ length: 8 }, (_, i) => `/k/${i + 10}`), '/k/last'].sort());
    expect(kv.batches.every((b) => batchBytes(b) <= 300)).toBe(true);
    expect(refused).toEqual([['/k/alone', undefined]]);
    expect(w.refusedWrites().map((r) => r.key)).toEqual(['/k/alone']);
    expect(errors).toEqual([]); // a size refusal is not an outage: no backoff, no error reports
  });

  it("splits batches over etcd's --max-txn-ops", async () => {
    const kv = new LimitedKv(Infinity, 4);
    const w = new StateWriter(kv, {}, limits);
    w.resume();
    for (let i = 10; i < 30; i++) w.set(`/k/${i}`, 'v');
    await w.idle();
    expect(kv.data.size).toBe(20);
    expect(Math.max(...kv.batches.map((b) => b.length))).toBeLessThanOrEqual(4);
    expect(w.refused).toBe(0);
  });

  it('refuses limits under which a value could never fit a batch', () => {
    expect(() => new StateWriter(new MemoryKv(), {}, { maxBatchBytes: 1_000, maxValueBytes: 1_000 })).toThrow(/maxValueBytes < maxBatchBytes/);
  });
});
