import { describe, expect, it, vi } from 'vitest';
import { credentialKey } from '../mesh/credentials.js';
import { PeerConnection, type RemoteSpec, type Replication } from './peer-connection.js';
import type { PeerSource, PeerWatch } from './peer-source.js';
import { MemoryPeer } from './test-fakes.js';

const cert = (n: number) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----`;
const key = (n: number) => `-----BEGIN PRIVATE KEY-----\n${n}\n-----END PRIVATE KEY-----`;
const spec: RemoteSpec = { name: 'west', id: 7, endpoint: 'west.example:2379', caPem: 'ca', certPem: cert(1), keyPem: key(1), podCidrs: ['10.7.0.0/16'] };
const until = (what: () => unknown) => vi.waitFor(() => expect(what()).toBeTruthy(), { timeout: 5_000, interval: 5 });

/** Records which way the connection ran the replication; each watch can be failed by the test. */
class RecordingReplication implements Replication {
  readonly calls: ('sync' | 'resume')[] = [];
  readonly watches: { source: PeerSource; fail: (err: Error) => void; cancelled: boolean }[] = [];
  failSyncs = 0;

  sync(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch> {
    this.calls.push('sync');
    if (this.failSyncs > 0) {
      this.failSyncs--;
      return Promise.reject(new Error('list failed'));
    }
    return this.watch(source, failed);
  }

  resume(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch> {
    this.calls.push('resume');
    return this.watch(source, failed);
  }

  private watch(source: PeerSource, fail: (err: Error) => void): Promise<PeerWatch> {
    const w = { source, fail, cancelled: false };
    this.watches.push(w);
    return Promise.resolve({
      cancel: () => {
        w.cancelled = true;
        return Promise.resolve();
      },
    });
  }
}

function setup(peer = new MemoryPeer()) {
  const replication = new RecordingReplication();
  const logs: string[] = [];
  const errors: string[] = [];
  const stored: string[] = [];
  const connection = new PeerConnection({
    remote: spec,
    localCluster: 'east',
    replication,
    connect: peer.connect,
    log: { info: (_o, m) => logs.push(m), warn: (_o, m) => logs.push(m) },
    onError: (m) => errors.push(m),
    onCredentials: (c) => stored.push(c.certPem),
    retry: { minMs: 1, maxMs: 4 },
  });
  return { peer, replication, connection, logs, errors, stored };
}

describe('PeerConnection', () => {
  it('retries a failing sync with backoff until it watches', async () => {
    const { replication, connection, logs, errors } = setup();
    replication.failSyncs = 3;
    connection.start();
    await until(() => replication.watches.length === 1);
    expect(replication.calls).toEqual(['sync', 'sync', 'sync', 'sync']);
    expect(errors).toEqual(['list failed', 'list failed', 'list failed']);
    expect(logs.filter((m) => m === 'remote sync failed, retrying')).toHaveLength(1); // the first, then every tenth
    await connection.stop();
  });

  it('syncs again when the current watch ends, replacing it', async () => {
    const { replication, connection, logs } = setup();
    connection.start();
    await until(() => replication.watches.length === 1);
    replication.watches[0]!.fail(new Error('compacted'));
    await until(() => replication.watches.length === 2);
    expect(replication.calls).toEqual(['sync', 'sync']);
    expect(replication.watches[0]!.cancelled).toBe(true);
    expect(logs).toContain('remote watch failed, relisting');
    await connection.stop();
    expect(replication.watches[1]!.cancelled).toBe(true);
  });

  it('adopts a renewed identity by resuming over a new client, without a sync; the old watch is forgotten', async () => {
    const { peer, replication, connection, stored } = setup();
    connection.start();
    await until(() => replication.watches.length === 1 && peer.watches.size === 1); // the credential watch
    peer.put(credentialKey('west', 'east'), JSON.stringify({ certPem: cert(2), keyPem: key(2) }));
    await until(() => connection.rotations === 1);

    expect(replication.calls).toEqual(['sync', 'resume']);
    expect(replication.watches.map((w) => w.cancelled)).toEqual([true, false]);
    expect(replication.watches[1]!.source).not.toBe(replication.watches[0]!.source);
    expect(connection.spec.certPem).toBe(cert(2));
    expect(stored).toEqual([cert(2)]);

    // A late failure of the replaced watch is not news; the current one's is.
    replication.watches[0]!.fail(new Error('old client closed'));
    await new Promise((r) => setTimeout(r, 20));
    expect(replication.calls).toEqual(['sync', 'resume']);
    replication.watches[1]!.fail(new Error('compacted'));
    await until(() => replication.calls.length === 3);
    expect(replication.calls[2]).toBe('sync');
    await connection.stop();
  });

  it('does not adopt before it watches: the sync reads the current credential at its end', async () => {
    const { peer, replication, connection } = setup();
    replication.failSyncs = 1;
    connection.start();
    await connection.adopt({ certPem: cert(2), keyPem: key(2) }); // nothing to resume from yet
    expect(connection.rotations).toBe(0);
    peer.put(credentialKey('west', 'east'), JSON.stringify({ certPem: cert(2), keyPem: key(2) }));
    await until(() => connection.rotations === 1);
    expect(replication.calls).toEqual(['sync', 'sync', 'resume']);
    await connection.stop();
  });

  it('stops retrying once stopped', async () => {
    const { replication, connection } = setup();
    replication.failSyncs = Number.POSITIVE_INFINITY;
    connection.start();
    await until(() => replication.calls.length >= 2);
    await connection.stop();
    const n = replication.calls.length;
    await new Promise((r) => setTimeout(r, 30));
    expect(replication.calls.length).toBeLessThanOrEqual(n + 1);
  });
});
