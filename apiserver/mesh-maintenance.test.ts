import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createMetrics } from './metrics.js';
import { keys } from '../mesh/schema/keys.js';
import { MeshMaintenance, type DbStatus, type MaintenanceTarget } from './mesh-maintenance.js';

const MiB = 1024 * 1024;
const INTERVAL = 300_000;

/** One etcd as the compactors see it: a revision that others' writes advance, the CAS key, the file sizes. */
class FakeEtcd {
  revision = 100;
  keyVersion = 0;
  compactedTo = 0;
  compactions: number[] = [];
  defrags = 0;
  db: DbStatus = { dbSize: 10 * MiB, dbSizeInUse: 9 * MiB };
  failing = new Set<string>();

  target(): MaintenanceTarget {
    const fail = (step: string) => {
      if (this.failing.has(step)) throw new Error(`14 UNAVAILABLE: ${step}`);
    };
    return {
      claim: async (key, version, _value) => {
        fail('claim');
        expect(key).toBe(keys.compactRevision('east'));
        if (version !== this.keyVersion) return { won: false, version: this.keyVersion, revision: this.revision };
        this.keyVersion++;
        return { won: true, version: this.keyVersion, revision: ++this.revision };
      },
      compact: async (revision) => {
        fail('compact');
        if (revision <= this.compactedTo) throw new Error('11 OUT_OF_RANGE: etcdserver: mvcc: required revision has been compacted');
        this.compactedTo = revision;
        this.compactions.push(revision);
      },
      status: async () => {
        fail('status');
        return { ...this.db };
      },
      defragment: async () => {
        fail('defrag');
        this.defrags++;
        this.db = { dbSize: this.db.dbSizeInUse, dbSizeInUse: this.db.dbSizeInUse };
      },
    };
  }

  /** The rest of the mesh writing. */
  write(n = 1): void {
    this.revision += n;
  }
}

function maintenance(etcd: FakeEtcd, o: { defrag?: boolean; minFreeMiB?: number } = {}) {
  const metrics = createMetrics();
  const log = { info: vi.fn(), warn: vi.fn() };
  const m = new MeshMaintenance({ target: etcd.target(), cluster: 'east', intervalMs: INTERVAL, defragMinFreeBytes: (o.minFreeMiB ?? 32) * MiB, defrag: o.defrag ?? true, metrics, log });
  const gauge = async (g: { get: () => Promise<{ values: { value: number }[] }> }) => (await g.get()).values[0]?.value;
  return { m, metrics, log, gauge };
}

describe('mesh etcd maintenance', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('compacts, every interval, to the revision observed one interval earlier', async () => {
    const etcd = new FakeEtcd();
    const { m, metrics, gauge } = maintenance(etcd);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    const atStart = etcd.revision; // the first tick only observes
    expect(etcd.compactions).toEqual([]);

    etcd.write(50);
    await vi.advanceTimersByTimeAsync(INTERVAL - 1);
    expect(etcd.compactions).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(etcd.compactions).toEqual([atStart]);
    const atFirst = etcd.revision;

    etcd.write(7);
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.compactions).toEqual([atStart, atFirst]);
    expect(await gauge(metrics.meshEtcdCompactedRevision)).toBe(atFirst);
    await m.stop();
    await vi.advanceTimersByTimeAsync(INTERVAL * 3);
    expect(etcd.compactions).toHaveLength(2);
  });

  it('defragments only when the free space is over half the file and over the threshold, at most once per interval', async () => {
    const etcd = new FakeEtcd();
    const { m, metrics, gauge } = maintenance(etcd, { minFreeMiB: 32 });
    m.start();
    await vi.advanceTimersByTimeAsync(0);

    etcd.db = { dbSize: 50 * MiB, dbSizeInUse: 20 * MiB }; // 30 MiB free: 60 %, but under 32 MiB
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.defrags).toBe(0);
    expect(await gauge(metrics.meshEtcdDbSize)).toBe(50 * MiB);
    expect(await gauge(metrics.meshEtcdDbSizeInUse)).toBe(20 * MiB);

    etcd.db = { dbSize: 200 * MiB, dbSizeInUse: 120 * MiB }; // 80 MiB free, but only 40 %
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.defrags).toBe(0);

    etcd.db = { dbSize: 200 * MiB, dbSizeInUse: 60 * MiB }; // 140 MiB free, 70 %
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.defrags).toBe(1);
    expect(await gauge(metrics.meshEtcdDefrags)).toBe(1);
    expect(await gauge(metrics.meshEtcdDbSize)).toBe(60 * MiB); // status again after the defrag

    await vi.advanceTimersByTimeAsync(INTERVAL); // nothing left to reclaim
    expect(etcd.defrags).toBe(1);
    await m.stop();
  });

  it('never defragments with defrag off (several members), nor on an etcd that does not report dbSizeInUse', async () => {
    const off = new FakeEtcd();
    off.db = { dbSize: 500 * MiB, dbSizeInUse: 10 * MiB };
    const a = maintenance(off, { defrag: false });
    a.m.start();
    await vi.advanceTimersByTimeAsync(INTERVAL * 2);
    expect(off.defrags).toBe(0);
    expect(off.compactions).toHaveLength(2); // compaction is cluster-wide: it still runs
    await a.m.stop();

    const old = new FakeEtcd();
    old.db = { dbSize: 500 * MiB, dbSizeInUse: 0 };
    const b = maintenance(old);
    b.m.start();
    await vi.advanceTimersByTimeAsync(INTERVAL * 2);
    expect(old.defrags).toBe(0);
    await b.m.stop();
  });

  it('two apiservers on one etcd: one compacts per interval, the other takes over when it stops', async () => {
    const etcd = new FakeEtcd();
    const first = maintenance(etcd);
    first.m.start();
    await vi.advanceTimersByTimeAsync(60_000); // a second instance starts a minute later (a rolling update)
    const second = maintenance(etcd);
    second.m.start();
    for (let i = 0; i < 4; i++) {
      etcd.write(10);
      await vi.advanceTimersByTimeAsync(INTERVAL);
    }
    expect(etcd.compactions).toHaveLength(4); // once per interval, not twice
    expect(await first.gauge(first.metrics.meshEtcdCompactedRevision)).toBe(etcd.compactedTo);
    expect(await second.gauge(second.metrics.meshEtcdCompactedRevision)).toBe(0); // never compacted

    await first.m.stop();
    for (let i = 0; i < 3; i++) {
      etcd.write(10);
      await vi.advanceTimersByTimeAsync(INTERVAL);
    }
    expect(etcd.compactions.length).toBeGreaterThanOrEqual(5); // taken over within two intervals
    expect(await second.gauge(second.metrics.meshEtcdCompactedRevision)).toBe(etcd.compactedTo);
    expect(etcd.compactions).toEqual([...etcd.compactions].sort((x, y) => x - y));
    await second.m.stop();
  });

  it('logs and counts a failed step, never throws, and carries on next interval', async () => {
    const etcd = new FakeEtcd();
    const { m, metrics, log } = maintenance(etcd);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    etcd.failing = new Set(['claim', 'status']);
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.compactions).toEqual([]);
    expect(log.warn).toHaveBeenCalledWith({ step: 'claim', err: '14 UNAVAILABLE: claim' }, 'mesh etcd maintenance step failed; retried next interval');
    const errors = Object.fromEntries((await metrics.meshEtcdMaintenanceErrors.get()).values.map((v) => [v.labels.step, v.value]));
    expect(errors).toEqual({ claim: 1, status: 1 });

    etcd.failing = new Set(['compact']);
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.compactions).toEqual([]);

    etcd.failing = new Set();
    etcd.write(5);
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect(etcd.compactions).toHaveLength(1);
    // Another compactor (or etcd's own auto-compaction) already went further: not an error.
    etcd.compactedTo = etcd.revision + 1_000;
    etcd.revision += 2_000;
    await vi.advanceTimersByTimeAsync(INTERVAL);
    await vi.advanceTimersByTimeAsync(INTERVAL);
    expect((await metrics.meshEtcdMaintenanceErrors.get()).values.find((v) => v.labels.step === 'compact')?.value).toBe(1);
    await m.stop();
  });
});
