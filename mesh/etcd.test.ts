import { Etcd3, type IKeyValue, type IRangeResponse } from 'etcd3';
import { afterEach, describe, expect, it } from 'vitest';
import { EtcdKv, isTooLargeError, listPrefix, listPrefixes, nextPageLimit, PAGE_BUDGET_BYTES } from './etcd.js';
import { BatchTooLargeError } from './state-writer.js';

const GRPC_MAX = 4 * 1024 * 1024;

interface RangeRequest {
  key: Buffer;
  range_end: Buffer;
  limit: number;
  revision?: number;
  keys_only?: boolean;
}

/**
 * An etcd KV service behind etcd3's mock hook: ranges in key order with limits, at a revision, and a
 * response over gRPC's 4 MiB receive limit failing as grpc-js fails it.
 */
function fakeEtcd(data: Map<string, string>, revision = 42) {
  const client = new Etcd3({ hosts: '127.0.0.1:1' });
  const requests: RangeRequest[] = [];
  client.mock({
    // etcd3's hook is generic in its answer; this fake only ever answers KV.range.
    exec: <T,>(service: string, method: string, req: unknown): Promise<T> => {
      if (service !== 'KV' || method !== 'range') return Promise.reject(new Error(`unexpected ${service}.${method}`));
      const r = req as RangeRequest;
      requests.push(r);
      const start = r.key.toString();
      const end = r.range_end.toString();
      const all = [...data.keys()].sort().filter((k) => k >= start && k < end);
      const page = r.limit > 0 ? all.slice(0, r.limit) : all;
      const kvs: IKeyValue[] = page.map((k) => ({ key: Buffer.from(k), value: r.keys_only ? Buffer.alloc(0) : Buffer.from(data.get(k)!), create_revision: '1', mod_revision: '1', version: '1', lease: '0' }));
      const bytes = kvs.reduce((n, kv) => n + kv.key.length + kv.value.length + 20, 0);
      if (bytes > GRPC_MAX) return Promise.reject(new Error(`8 RESOURCE_EXHAUSTED: Received message larger than max (${bytes} vs ${GRPC_MAX})`));
      const answer: IRangeResponse = { header: { revision: String(r.revision || revision), cluster_id: '1', member_id: '1', raft_term: '1' }, kvs, more: page.length < all.length, count: String(all.length) };
      return Promise.resolve(answer as T);
    },
  });
  return { client, requests };
}

const clients: Etcd3[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

function setup(data: Map<string, string>) {
  const f = fakeEtcd(data);
  clients.push(f.client);
  return f;
}

describe('nextPageLimit', () => {
  it('asks for as many keys as fit the byte budget at the size seen, within 1..maxKeys', () => {
    expect(nextPageLimit({ keys: 0, bytes: 0, lastKeys: 0, lastBytes: 0 }, 500)).toBe(500);
    expect(nextPageLimit({ keys: 500, bytes: 500 * 1024, lastKeys: 500, lastBytes: 500 * 1024 }, 500)).toBe(500); // 1 KiB a key: 2,048 would fit
    expect(nextPageLimit({ keys: 100, bytes: 100 * 100 * 1024, lastKeys: 100, lastBytes: 100 * 100 * 1024 }, 500)).toBe(20); // 100 KiB a key
    expect(nextPageLimit({ keys: 1, bytes: 3 * PAGE_BUDGET_BYTES, lastKeys: 1, lastBytes: 3 * PAGE_BUDGET_BYTES }, 500)).toBe(1);
  });

  it('follows the last page when its keys are larger than the running average', () => {
    // 1,000 keys of 100 bytes, then a page of 10 keys of 400 KiB: the average alone would allow 30 more.
    const seen = { keys: 1_010, bytes: 100_000 + 10 * 400 * 1024, lastKeys: 10, lastBytes: 10 * 400 * 1024 };
    expect(nextPageLimit(seen, 500)).toBe(5);
  });
});

describe('listPrefix', () => {
  it('reads large values in pages under the 4 MiB limit, halving a page that still fails, all at one revision', async () => {
    const data = new Map<string, string>();
    for (let i = 0; i < 100; i++) data.set(`/p/${String(i).padStart(3, '0')}`, 'v'.repeat(100 * 1024)); // 10 MiB in all
    data.set('/q/other', 'x');
    const { client, requests } = setup(data);
    const { kvs, revision } = await listPrefix(client, '/p/');
    expect(kvs.map((kv) => kv.key.toString())).toEqual([...data.keys()].filter((k) => k.startsWith('/p/')));
    expect(revision).toBe(42);
    // 500 keys (10 MiB) failed, then 250, 125, 62 (6.2 MiB); 31 (3.1 MiB) arrived; after it pages of 20 (2 MiB).
    expect(requests.map((r) => r.limit)).toEqual([500, 250, 125, 62, 31, 20, 20, 20, 20]);
    // Every page after the first at the first one's revision.
    expect(requests.slice(5).every((r) => Number(r.revision) === 42)).toBe(true);
  });

  it('pages small values by keys as before', async () => {
    const data = new Map<string, string>();
    for (let i = 0; i < 1_200; i++) data.set(`/p/${String(i).padStart(4, '0')}`, 'v');
    const { client, requests } = setup(data);
    const { kvs } = await listPrefix(client, '/p/');
    expect(kvs).toHaveLength(1_200);
    expect(requests.map((r) => r.limit)).toEqual([500, 500, 500]);
  });

  it('fails naming the key whose value alone is too large to read, instead of looping', async () => {
    const data = new Map([
      ['/p/a', 'small'],
      ['/p/b', 'v'.repeat(GRPC_MAX + 1)],
      ['/p/c', 'small'],
    ]);
    const { client, requests } = setup(data);
    await expect(listPrefix(client, '/p/')).rejects.toThrow(/etcd key \/p\/b cannot be read: its value alone exceeds gRPC's message size limit/);
    // /p/a arrives alone after halving; the page from /p/b fails down to one key, which is then looked up by name.
    const halving = [500, 250, 125, 62, 31, 15, 7, 3, 1];
    expect(requests.map((r) => r.limit)).toEqual([...halving, ...halving, 1]);
    expect(requests.at(-1)).toMatchObject({ keys_only: true, key: Buffer.from('/p/a\0') });
  });

  it('lists several prefixes at the first one’s revision', async () => {
    const data = new Map([
      ['/a/1', 'x'],
      ['/b/1', 'y'],
    ]);
    const { client, requests } = setup(data);
    const { kvs, revision } = await listPrefixes(client, ['/a/', '/b/']);
    expect(kvs.map((kv) => kv.key.toString())).toEqual(['/a/1', '/b/1']);
    expect(revision).toBe(42);
    expect(Number(requests[1]!.revision)).toBe(42);
  });
});

describe('size errors', () => {
  it.each([
    ['etcdserver: request is too large', true],
    ['etcdserver: too many operations in txn request', true],
    ['8 RESOURCE_EXHAUSTED: Received message larger than max (5000000 vs 4194304)', true],
    ['8 RESOURCE_EXHAUSTED: Sent message larger than max (5000000 vs 4194304)', true],
    ['etcdserver: mvcc: database space exceeded', false], // NOSPACE: an outage, retried
    ['14 UNAVAILABLE: connect ECONNREFUSED', false],
  ])('%s → %s', (message, expected) => {
    expect(isTooLargeError(new Error(message))).toBe(expected);
  });

  it('EtcdKv hands etcd refusing a batch for its size to the writer as BatchTooLargeError', async () => {
    const client = new Etcd3({ hosts: '127.0.0.1:1' });
    clients.push(client);
    let message = 'etcdserver: request is too large';
    client.mock({ exec: () => Promise.reject(new Error(message)) });
    const kv = new EtcdKv(() => client);
    await expect(kv.apply([{ key: '/k', value: 'v' }])).rejects.toBeInstanceOf(BatchTooLargeError);
    message = '14 UNAVAILABLE: connect ECONNREFUSED';
    const err = await kv.apply([{ key: '/k', value: 'v' }]).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(BatchTooLargeError);
    expect((err as Error).message).toMatch(/UNAVAILABLE/);
  });
});
