import { afterEach, describe, expect, it, vi } from 'vitest';
import { cachePrefix, keys } from '../mesh/schema/keys.js';
import { StateWriter } from '../mesh/state-writer.js';
import { PeerHealth } from './peer-health.js';
import { LeasedSyncStatus } from './sync-status.js';
import { MemoryKv, MemoryLeaseEtcd } from './test-fakes.js';

const REMOTE = 'west';
const T0 = Date.parse('2030-01-01T00:00:00Z');

/** `timers`: the clock is vitest's fake Date.now, so timers (vi.useFakeTimers) and the clock move together. */
async function setup({ timers, ...o }: { staleAfterMs?: number; removeAfterMs?: number; timers?: boolean } = {}) {
  const local = new MemoryKv();
  const etcd = new MemoryLeaseEtcd(local);
  const cache = new StateWriter(local);
  await cache.load([cachePrefix(REMOTE)]);
  cache.resume();
  const clock = { now: T0 };
  const replication = { connected: true, synced: true };
  const logs: string[] = [];
  let revived = 0;
  const log = { info: (_o: object, m: string) => logs.push(m), warn: (_o: object, m: string) => logs.push(m) };
  const store = new LeasedSyncStatus({ etcd: etcd.ref, log, retryMs: 10 });
  const health = new PeerHealth({
    remote: REMOTE,
    cache,
    status: store,
    replication,
    log,
    ...o,
    onRevived: () => revived++,
    now: timers ? () => Date.now() : () => clock.now,
  });
  const status = (): unknown => {
    const raw = local.data.get(keys.syncStatus(REMOTE));
    return raw === undefined ? undefined : JSON.parse(raw);
  };
  return { health, cache, local, etcd, store, clock, replication, logs, status, revived: () => revived };
}

/** A heartbeat as the peer stamps it, `skewMs` off the local clock. */
const beat = (clock: { now: number }, skewMs = 0) => new Date(clock.now + skewMs).toISOString();

describe('PeerHealth', () => {
  it('is stale once synced until a heartbeat arrives, then after staleAfterMs without a new one (local clock)', async () => {
    const { health, clock, replication } = await setup({ staleAfterMs: 5_000 });
    replication.synced = false;
    expect(health.stale).toBe(false); // not judged before the first sync
    replication.synced = true;
    expect(health.stale).toBe(true);

    health.heartbeat(beat(clock));
    expect(health.stale).toBe(false);
    clock.now += 5_000;
    expect(health.stale).toBe(false);
    clock.now += 1;
    expect(health.stale).toBe(true);
    health.heartbeat(beat(clock));
    expect(health.stale).toBe(false);
  });

  it('judges on the local clock: a peer clock far behind or ahead changes nothing', async () => {
    const { health, clock } = await setup({ staleAfterMs: 5_000 });
    health.heartbeat(beat(clock, -3_600_000)); // an hour behind, yet just heard
    expect(health.stale).toBe(false);
    expect(health.lastHeartbeat).toBe(new Date(T0 - 3_600_000).toISOString()); // status shows the peer's own time

    health.heartbeat(beat(clock, +3_600_000)); // an hour ahead, then silent
    clock.now += 6_000;
    expect(health.stale).toBe(true);
  });

  it('the same heartbeat seen again (a relist re-reading it) does not count as a new one', async () => {
    const { health, clock } = await setup({ staleAfterMs: 5_000 });
    const at = beat(clock);
    health.heartbeat(at);
    clock.now += 4_000;
    health.heartbeat(at);
    clock.now += 2_000;
    expect(health.stale).toBe(true);
  });

  it('publishes the sync status agents act on, and only when it changes', async () => {
    const { health, clock, etcd, replication, status } = await setup({ staleAfterMs: 5_000 });
    health.heartbeat(beat(clock));
    await health.publish();
    await health.publish();
    expect(status()).toEqual({ cluster: REMOTE, connected: true, synced: true, stale: false });
    expect(etcd.puts).toHaveLength(1);

    replication.connected = false;
    clock.now += 10_000;
    await health.publish();
    expect(status()).toEqual({ cluster: REMOTE, connected: false, synced: true, stale: true });
    expect(etcd.puts).toHaveLength(2);

    await health.unpublish();
    expect(status()).toBeUndefined();
  });

  it('retries publishing at the next tick when the local etcd fails', async () => {
    const { health, clock, etcd, status } = await setup();
    health.heartbeat(beat(clock));
    etcd.down = true;
    await health.publish();
    expect(status()).toBeUndefined();
    etcd.down = false;
    await health.publish();
    expect(status()).toMatchObject({ stale: false });
  });

  it('keeps the status on a lease: gone when the importer stops or dies, put again on a new lease while it lives', async () => {
    const { health, clock, etcd, store, status, logs } = await setup();
    const key = keys.syncStatus(REMOTE);
    health.heartbeat(beat(clock));
    await health.publish();
    const first = etcd.leaseOf(key)!;
    expect(first).toBeDefined();
    expect(etcd.puts).toHaveLength(1); // the first lease carries it once

    // The lease expired under a live importer (etcd unreachable for its TTL): a new lease carries the status again.
    first.lose();
    expect(status()).toBeUndefined();
    await vi.waitFor(() => expect(status()).toMatchObject({ stale: false }));
    expect(etcd.leaseOf(key)).not.toBe(first);
    expect(logs).toContain('sync status lease lost, granting a new one');

    // Identity renewal: the status moves to a lease on the new client, never missing in between.
    const second = etcd.leaseOf(key)!;
    await store.move();
    expect(etcd.leaseOf(key)).not.toBe(second);
    expect(second.revoked()).toBe(true);
    expect(status()).toMatchObject({ stale: false });

    // A dead importer: nothing renews its lease and etcd lets it expire, taking the status along.
    etcd.leaseOf(key)!.expire();
    expect(status()).toBeUndefined();
  });

  it('revokes every status when the sync stops, and a disconnected remote is not put back by a new lease', async () => {
    const { health, clock, etcd, store, status } = await setup();
    health.heartbeat(beat(clock));
    await health.publish();
    await store.put('south', JSON.stringify({ cluster: 'south', connected: true, synced: true, stale: false }));
    await health.unpublish();
    expect(status()).toBeUndefined();
    etcd.leaseOf(keys.syncStatus('south'))!.lose();
    await vi.waitFor(() => expect(etcd.leaseOf(keys.syncStatus('south'))).toBeDefined());
    expect(status()).toBeUndefined();

    await store.close();
    expect(etcd.kv.data.has(keys.syncStatus('south'))).toBe(false);
  });

  it('counts cached keys per kind', async () => {
    const { health, cache } = await setup();
    const c = cachePrefix(REMOTE);
    for (const k of ['services/default/a', 'services/default/b', 'nodes/n1', 'identities/458852', 'ips/10.7.1.5', 'config', 'heartbeat']) cache.set(c + k, '{}');
    expect(health.counts()).toEqual({ services: 2, identities: 1, ips: 1, nodes: 1 });
  });

  it('removes the cached state once stale past the grace, keeps it before, and asks for a relist when the peer is back', async () => {
    const { health, cache, local, clock, logs, revived } = await setup({ staleAfterMs: 5_000, removeAfterMs: 60_000 });
    const key = `${cachePrefix(REMOTE)}services/default/echo`;
    cache.set(key, '{}');
    await cache.idle();
    health.heartbeat(beat(clock));

    clock.now += 30_000;
    await health.publish();
    await cache.idle();
    expect(health.stale).toBe(true);
    expect(local.data.has(key)).toBe(true); // stale: kept, flagged

    clock.now += 30_001;
    await health.publish();
    await cache.idle();
    expect(local.data.has(key)).toBe(false);
    await health.publish();
    expect(logs.filter((m) => m === 'remote stale past the grace: its cached state removed')).toHaveLength(1);

    health.heartbeat(beat(clock));
    expect(health.stale).toBe(false);
    expect(revived()).toBe(1);
    health.heartbeat(beat(clock, 1));
    expect(revived()).toBe(1);
  });

  it('never removes without a grace, nor a peer never heard from', async () => {
    const never = await setup({ staleAfterMs: 5_000, removeAfterMs: 0 });
    never.cache.set(`${cachePrefix(REMOTE)}nodes/n1`, '{}');
    never.health.heartbeat(beat(never.clock));
    never.clock.now += 86_400_000;
    await never.health.publish();
    await never.cache.idle();
    expect(never.local.data.size).toBe(2); // the node and the status

    const silent = await setup({ staleAfterMs: 5_000, removeAfterMs: 10_000 });
    silent.cache.set(`${cachePrefix(REMOTE)}nodes/n1`, '{}');
    silent.clock.now += 86_400_000;
    await silent.health.publish();
    await silent.cache.idle();
    expect(silent.health.stale).toBe(true);
    expect(silent.local.data.has(`${cachePrefix(REMOTE)}nodes/n1`)).toBe(true);
  });

  it('writes a value the first lease carried again after another was written (fresh, stale, fresh)', async () => {
    const { store, status, etcd } = await setup();
    const value = (stale: boolean) => JSON.stringify({ cluster: REMOTE, connected: true, synced: true, stale });
    await store.put(REMOTE, value(false)); // carried by the first lease
    await store.put(REMOTE, value(true));
    await store.put(REMOTE, value(false));
    expect(status()).toMatchObject({ stale: false });
    expect(etcd.puts).toHaveLength(3);
  });

  describe('promptly (fake timers)', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    /** Advances the fake clock and timers, letting the publishes they start land. */
    const advance = async (ms: number) => {
      await vi.advanceTimersByTimeAsync(ms);
    };

    it('publishes stale at the exact moment the threshold passes, not at a tick, and fresh on the next heartbeat', async () => {
      vi.useFakeTimers({ now: T0 });
      const { health, status, etcd } = await setup({ staleAfterMs: 2_000, timers: true });
      health.start();
      health.heartbeat(new Date().toISOString());
      await health.publish();
      expect(status()).toMatchObject({ stale: false });
      // Heartbeats every 500 ms keep it fresh, whatever the 2 s tick does.
      for (let i = 0; i < 8; i++) {
        await advance(500);
        health.heartbeat(new Date().toISOString());
      }
      expect(status()).toMatchObject({ stale: false });
      const silentFrom = Date.now();
      await advance(2_000);
      expect(health.stale).toBe(false); // exactly the threshold: not yet (stale is silent > staleAfterMs)
      expect(status()).toMatchObject({ stale: false });
      await advance(1);
      expect(health.stale).toBe(true);
      expect(status()).toMatchObject({ stale: true }); // published by the armed timer, 2001 ms after the last beat
      expect(Date.now() - silentFrom).toBe(2_001);
      const puts = etcd.puts.length;

      await advance(300); // not on a tick: the first heartbeat after it publishes fresh at once
      health.heartbeat(new Date().toISOString());
      await advance(0);
      expect(status()).toMatchObject({ stale: false });
      expect(etcd.puts).toHaveLength(puts + 1);
      health.stop();
    });

    it('a beat every 500 ms writes nothing: only the transitions are published', async () => {
      vi.useFakeTimers({ now: T0 });
      const { health, etcd } = await setup({ staleAfterMs: 2_000, timers: true });
      health.start();
      health.heartbeat(new Date().toISOString());
      await health.publish();
      const puts = etcd.puts.length;
      for (let i = 0; i < 40; i++) {
        await advance(500);
        health.heartbeat(new Date().toISOString());
      }
      expect(etcd.puts).toHaveLength(puts);
      health.stop();
    });

    it('a heartbeat arriving while the stale status is being written is published right after it', async () => {
      vi.useFakeTimers({ now: T0 });
      const { health, status, store } = await setup({ staleAfterMs: 1_000, timers: true });
      health.start();
      health.heartbeat(new Date().toISOString());
      await health.publish();
      // Hold the stale write in flight, and let the peer come back meanwhile.
      const put = store.put.bind(store);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      vi.spyOn(store, 'put').mockImplementationOnce(async (remote, value) => {
        await held;
        return put(remote, value);
      });
      await advance(1_001);
      health.heartbeat(new Date().toISOString());
      release();
      await advance(0);
      expect(status()).toMatchObject({ stale: false });
      health.stop();
    });

    it('future- and past-dated heartbeats: stale exactly staleAfterMs after the last one arrived (local clock)', async () => {
      vi.useFakeTimers({ now: T0 });
      const { health, status } = await setup({ staleAfterMs: 2_000, timers: true });
      health.start();
      health.heartbeat(new Date(Date.now() + 3_600_000).toISOString()); // an hour ahead
      await health.publish();
      await advance(2_000);
      expect(status()).toMatchObject({ stale: false });
      await advance(1);
      expect(status()).toMatchObject({ stale: true });

      health.heartbeat(new Date(Date.now() - 3_600_000).toISOString()); // an hour behind: still news, fresh at once
      await advance(0);
      expect(status()).toMatchObject({ stale: false });
      await advance(2_001);
      expect(status()).toMatchObject({ stale: true });
      health.stop();
    });

    it('a stopped health arms no timer', async () => {
      vi.useFakeTimers({ now: T0 });
      const { health, etcd } = await setup({ staleAfterMs: 1_000, timers: true });
      health.start();
      health.heartbeat(new Date().toISOString());
      await health.publish();
      health.stop();
      const puts = etcd.puts.length;
      await advance(10_000);
      expect(vi.getTimerCount()).toBe(0);
      expect(etcd.puts).toHaveLength(puts);
    });
  });
});
