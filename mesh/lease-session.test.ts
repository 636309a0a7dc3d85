import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Etcd3, type Lease } from 'etcd3';
import { LeaseSession } from './lease-session.js';
import { MemoryLeaseEtcd, UNAVAILABLE } from './testing/memory-lease-etcd.js';

/** A holder that keeps /svc/me on whatever lease the session has, and counts its puts. */
function session(etcd: () => MemoryLeaseEtcd, o: { failFirstPuts?: number } = {}) {
  const lost: string[] = [];
  const retries: number[] = [];
  let failPuts = o.failFirstPuts ?? 0;
  const s = new LeaseSession({
    etcd: () => etcd().ref(),
    ttlSeconds: 10,
    retryMs: 100,
    maxRetryMs: 400,
    onNewLease: async (lease: Lease) => {
      if (failPuts > 0 && failPuts--) throw new Error('put refused');
      await lease.put('/svc/me').value(`on lease ${etcd().leases.findIndex((l) => Object.is(l, lease)) + 1}`);
    },
    onLost: (err) => lost.push(err.message),
    onRetry: (_err, attempt) => retries.push(attempt),
  });
  return { s, lost, retries };
}

describe('lease session', () => {
  afterEach(() => vi.useRealTimers());

  it('puts the holder\'s keys on its lease, and close() revokes it so they go at once', async () => {
    const etcd = new MemoryLeaseEtcd();
    const { s } = session(() => etcd);
    expect(s.lease).toBeUndefined();
    await s.open();
    expect(etcd.data.get('/svc/me')).toBe('on lease 1');
    expect(s.lease).toBe(etcd.leases[0]);
    await s.close();
    expect(etcd.leases[0]!.state).toBe('revoked');
    expect(etcd.data.size).toBe(0);
    expect(s.lease).toBeUndefined();
  });

  it('grants a new lease when the old one is lost and has the holder put its keys again', async () => {
    vi.useFakeTimers();
    const etcd = new MemoryLeaseEtcd();
    const { s, lost } = session(() => etcd);
    await s.open();
    etcd.leases[0]!.lose();
    expect(etcd.data.size).toBe(0);
    expect(s.lease).toBeUndefined(); // nothing to put on until the replacement holds
    expect(lost).toEqual(['lease expired']);
    await vi.advanceTimersByTimeAsync(100);
    expect(etcd.leases).toHaveLength(2);
    expect(etcd.data.get('/svc/me')).toBe('on lease 2');
    expect(s.lease).toBe(etcd.leases[1]);
    await s.close();
    expect(etcd.data.size).toBe(0);
  });

  it('retries a replacement that fails with backoff, revoking each failed lease, until one holds', async () => {
    vi.useFakeTimers();
    const etcd = new MemoryLeaseEtcd();
    const { s, retries } = session(() => etcd);
    await s.open();
    etcd.down = true;
    etcd.leases[0]!.lose();
    await vi.advanceTimersByTimeAsync(100 + 200 + 400 + 400);
    expect(retries).toEqual([1, 2, 3, 4]);
    expect(etcd.leases.slice(1).map((l) => l.state)).toEqual(['revoked', 'revoked', 'revoked', 'revoked']);
    etcd.down = false;
    await vi.advanceTimersByTimeAsync(400);
    expect(etcd.data.get('/svc/me')).toBe('on lease 6');
    expect(s.lease).toBe(etcd.leases[5]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(etcd.leases).toHaveLength(6); // holding: no more grants
  });

  it('moves to the client the EtcdRef returns now, then revokes the old lease; its later loss is ignored', async () => {
    vi.useFakeTimers();
    let current = new MemoryLeaseEtcd();
    const old = current;
    const { s, lost } = session(() => current);
    await s.open();
    current = new MemoryLeaseEtcd();
    await s.move();
    expect(current.data.get('/svc/me')).toBe('on lease 1');
    expect(s.lease).toBe(current.leases[0]);
    expect(old.leases[0]!.state).toBe('revoked');
    expect(old.data.size).toBe(0);
    old.leases[0]!.emit('lost', new Error('old client closed'));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(lost).toEqual([]);
    expect(current.leases).toHaveLength(1);
  });

  it('keeps the current lease when a move fails', async () => {
    let current = new MemoryLeaseEtcd();
    const old = current;
    const { s } = session(() => current);
    await s.open();
    current = new MemoryLeaseEtcd();
    current.down = true;
    await expect(s.move()).rejects.toThrow(UNAVAILABLE);
    expect(s.lease).toBe(old.leases[0]);
    expect(old.data.get('/svc/me')).toBe('on lease 1');
    expect(current.leases[0]!.state).toBe('revoked');
  });

  it('rejects an open whose keys could not be put, leaving no lease behind, and opens on the next try', async () => {
    const etcd = new MemoryLeaseEtcd();
    const { s } = session(() => etcd, { failFirstPuts: 1 });
    await expect(s.open()).rejects.toThrow('put refused');
    expect(s.lease).toBeUndefined();
    expect(etcd.leases[0]!.state).toBe('revoked');
    await s.open();
    expect(etcd.data.get('/svc/me')).toBe('on lease 2');
  });

  it('after close, neither a loss nor a move grants anything', async () => {
    vi.useFakeTimers();
    const etcd = new MemoryLeaseEtcd();
    const { s } = session(() => etcd);
    await s.open();
    const lease = etcd.leases[0]!;
    await s.close();
    lease.emit('lost', new Error('late'));
    await s.move();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(etcd.leases).toHaveLength(1);
    expect(etcd.data.size).toBe(0);
  });
});

/** A free 127.0.0.1 port (the OS picks one; etcd binds it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

describe.skipIf(!existsSync('/usr/bin/etcd'))('lease session on a real etcd', () => {
  let dir: string;
  let proc: ChildProcess;
  let admin: Etcd3;
  let client: Etcd3;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lease-session-'));
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    proc = spawn(
      '/usr/bin/etcd',
      ['--name', 'test', '--data-dir', join(dir, 'data'), '--listen-client-urls', url, '--advertise-client-urls', url, '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `test=${peer}`],
      { stdio: 'ignore' },
    );
    admin = new Etcd3({ hosts: url });
    client = new Etcd3({ hosts: url });
    await vi.waitFor(() => admin.get('/ready').string(), { timeout: 15_000, interval: 200 });
  }, 20_000);

  afterAll(async () => {
    admin?.close();
    client?.close();
    proc?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('re-puts the keys on a new lease after the old one is revoked behind its back, and close() removes them', async () => {
    const grants: string[] = [];
    const s = new LeaseSession({
      etcd: () => client,
      ttlSeconds: 2, // etcd's minimum here; the keepalive runs every TTL/3, so a revoked lease is noticed within a second
      retryMs: 50,
      onNewLease: async (lease) => {
        grants.push(await lease.grant());
        await lease.put('/svc/me').value(`lease ${grants.length}`);
      },
    });
    await s.open();
    expect(await admin.get('/svc/me').string()).toBe('lease 1');
    await admin.leaseClient.leaseRevoke({ ID: grants[0]! });
    expect(await admin.get('/svc/me').string()).toBeNull();
    await vi.waitFor(async () => expect(await admin.get('/svc/me').string()).toBe('lease 2'), { timeout: 5_000, interval: 100 });
    expect(grants[1]).not.toBe(grants[0]);
    await s.close();
    expect(await admin.get('/svc/me').string()).toBeNull();
  });
});
