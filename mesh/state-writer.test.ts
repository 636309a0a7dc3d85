import { describe, expect, it } from 'vitest';
import { StateWriter, type KvBackend, type KvOp } from './state-writer.js';

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
    const w = new StateWriter(kv, {}, 10);
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
