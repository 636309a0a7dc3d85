import { describe, expect, it } from 'vitest';
import type { ApiserverStatus } from '../../mesh/status.js';
import { ensureClusterCA } from '../../mtls/cluster-ca.js';
import { RemoteSecret, remoteSecretName } from '../../mesh/link-secrets.js';
import { checkExistingLinks, checkMeshable, linkBoth, overlappingCidrs, type Side } from './connect.js';

const st = (cluster: string, clusterId: number, podCidrs: string[]) => ({ cluster, clusterId, podCidrs }) as ApiserverStatus;

describe('skein connect preconditions', () => {
  it('finds overlapping pod CIDRs, including a /16 containing a /24', () => {
    expect(overlappingCidrs(['10.1.0.0/16'], ['10.2.0.0/16'])).toBeUndefined();
    expect(overlappingCidrs(['10.1.0.0/16'], ['10.2.0.0/16', '10.1.7.0/24'])).toEqual(['10.1.0.0/16', '10.1.7.0/24']);
  });
  it.each([
    [st('east', 1, []), st('east', 2, []), /both contexts are cluster "east"/],
    [st('east', 1, []), st('west', 1, []), /both have cluster ID 1: give one another ID/],
    [st('east', 1, ['10.1.1.0/24']), st('west', 2, ['10.1.0.0/16']), /pod CIDRs overlap: east has 10.1.1.0\/24, west has 10.1.0.0\/16/],
  ])('refuses clusters that cannot be meshed', (a, b, msg) => {
    expect(() => checkMeshable(a, b)).toThrow(msg);
  });
  it('accepts distinct clusters', () => {
    expect(() => checkMeshable(st('east', 1, ['10.1.0.0/16']), st('west', 2, ['10.2.0.0/16']))).not.toThrow();
  });
});

// ---- pinning and the refusals of hole 4, on fake Secret stores ----

/** A cluster's skein-system Secrets in memory; counts every write. */
class FakeSecrets {
  readonly items = new Map<string, { data: Record<string, string>; labels: Record<string, string> }>();
  writes = 0;
  async get(name: string) {
    const s = this.items.get(name);
    return s && { ...s.data };
  }
  async create(name: string, data: Record<string, string>, labels: Record<string, string> = {}) {
    if (this.items.has(name)) return false;
    this.items.set(name, { data: { ...data }, labels });
    this.writes++;
    return true;
  }
  async put(name: string, data: Record<string, string>, labels: Record<string, string> = {}) {
    this.items.set(name, { data: { ...data }, labels });
    this.writes++;
  }
  async list(labelSelector: string) {
    return [...this.items].filter(([, s]) => labelSelector in s.labels).map(([name, s]) => ({ name, data: { ...s.data } }));
  }
  snapshot(): string {
    return JSON.stringify([...this.items].sort(([a], [b]) => a.localeCompare(b)));
  }
}

const status = (cluster: string, clusterId: number, podCidrs: string[]) => ({ cluster, clusterId, podCidrs, meshEndpoint: `https://10.0.0.${clusterId}:2379`, remotes: [] }) as unknown as ApiserverStatus;

/** A cluster as skein-apiserver leaves it before any connect: its CAs exist. */
async function cluster(name: string, id: number, podCidrs: string[]): Promise<Side> {
  const secrets = new FakeSecrets();
  await ensureClusterCA(secrets, name);
  return { status: status(name, id, podCidrs), secrets };
}
const fake = (s: Side) => s.secrets as FakeSecrets;
const remoteOf = async (s: Side, peer: string) => RemoteSecret.parse(await s.secrets.get(remoteSecretName(peer)));

describe('skein connect pins each peer and refuses colliding links', () => {
  it('pins the peer ID and pod CIDRs (canonical) in the link, and a second run writes nothing', async () => {
    const [east, west] = await Promise.all([cluster('east', 1, ['10.1.1.0/24']), cluster('west', 2, ['10.2.2.0/24', '10.2.1.0/24'])]);
    const said: string[] = [];
    expect(await linkBoth(east, west, (m) => said.push(m))).toEqual({ aToB: true, bToA: true });
    expect(await remoteOf(east, 'west')).toMatchObject({ cluster: 'west', id: '2', 'pod-cidrs': '10.2.1.0/24,10.2.2.0/24' });
    expect(await remoteOf(west, 'east')).toMatchObject({ cluster: 'east', id: '1', 'pod-cidrs': '10.1.1.0/24' });
    expect(said).toContain('east: pinning west to cluster ID 2 and pod CIDRs 10.2.1.0/24,10.2.2.0/24');
    const writes = [fake(east).writes, fake(west).writes];
    expect(await linkBoth(east, west, () => {})).toEqual({ aToB: false, bToA: false });
    expect([fake(east).writes, fake(west).writes]).toEqual(writes);
  });

  it('re-pins a peer whose pod CIDRs changed only when run again, says so, and keeps its identity', async () => {
    const [east, west] = await Promise.all([cluster('east', 1, ['10.1.1.0/24']), cluster('west', 2, ['10.2.1.0/24'])]);
    await linkBoth(east, west, () => {});
    const before = await remoteOf(east, 'west');
    west.status = status('west', 2, ['10.2.1.0/24', '10.2.3.0/24']);
    const said: string[] = [];
    expect((await linkBoth(east, west, (m) => said.push(m))).aToB).toBe(true);
    expect(said).toContain('east: re-pinning west: pod CIDRs 10.2.1.0/24 -> 10.2.1.0/24,10.2.3.0/24, cluster ID 2 -> 2 (what west advertises now)');
    const after = await remoteOf(east, 'west');
    expect(after['pod-cidrs']).toBe('10.2.1.0/24,10.2.3.0/24');
    expect(after['tls.crt']).toBe(before['tls.crt']);
  });

  it('refuses a rebuilt peer (same name, another CA) before writing anything on either side', async () => {
    const [east, west] = await Promise.all([cluster('east', 1, ['10.1.1.0/24']), cluster('west', 2, ['10.2.1.0/24'])]);
    await linkBoth(east, west, () => {});
    const rebuilt = await cluster('west', 2, ['10.2.1.0/24']);
    const snapshots = [fake(east).snapshot(), fake(rebuilt).snapshot()];
    const writes = [fake(east).writes, fake(rebuilt).writes];
    await expect(linkBoth(east, rebuilt, () => {})).rejects.toThrow(
      /^cluster west is already linked from east with another CA \(fingerprint sha256 [0-9A-F:]{23}…; west's CA now is sha256 [0-9A-F:]{23}…\); run skein disconnect first if west was rebuilt$/,
    );
    // The other direction names the same collision from west's side.
    await expect(linkBoth(rebuilt, east, () => {})).rejects.toThrow(/^cluster west is already linked from east with another CA/);
    expect([fake(east).writes, fake(rebuilt).writes]).toEqual(writes);
    expect([fake(east).snapshot(), fake(rebuilt).snapshot()]).toEqual(snapshots);
  });

  it('refuses a third cluster with a linked cluster ID, naming both, before writing anything', async () => {
    const [east, west, north] = await Promise.all([cluster('east', 1, ['10.1.1.0/24']), cluster('west', 2, ['10.2.1.0/24']), cluster('north', 2, ['10.3.1.0/24'])]);
    await linkBoth(east, west, () => {});
    const snapshots = [fake(east).snapshot(), fake(north).snapshot()];
    await expect(linkBoth(east, north, () => {})).rejects.toThrow(/^clusters north and west both have cluster ID 2, and west is already linked from east: give north another ID/);
    expect([fake(east).snapshot(), fake(north).snapshot()]).toEqual(snapshots);
  });

  it("refuses a third cluster whose pod CIDRs overlap a linked cluster's pin", async () => {
    const [east, west, north] = await Promise.all([cluster('east', 1, ['10.1.1.0/24']), cluster('west', 2, ['10.2.1.0/24']), cluster('north', 3, ['10.2.0.0/16'])]);
    await linkBoth(east, west, () => {});
    const snapshots = [fake(east).snapshot(), fake(north).snapshot()];
    await expect(linkBoth(north, east, () => {})).rejects.toThrow(/^pod CIDRs overlap: north has 10.2.0.0\/16, west \(already linked from east\) is pinned to 10.2.1.0\/24/);
    expect([fake(east).snapshot(), fake(north).snapshot()]).toEqual(snapshots);
  });

  it.each([
    [[], /cannot pin the pod CIDRs of west \(none\): no pod CIDRs/],
    [['127.0.0.0/8'], /cannot pin the pod CIDRs of west \(127.0.0.0\/8\): 127.0.0.0\/8 overlaps loopback/],
    [['0.0.0.0/0'], /overlaps unspecified/],
    [['10.2.1.0/33'], /cannot pin the pod CIDRs of west \(10.2.1.0\/33\): pod CIDR "10.2.1.0\/33" is not an IPv4 CIDR/],
  ])('refuses to pin pod CIDRs %j', (podCidrs, msg) => {
    expect(() => checkMeshable(st('east', 1, ['10.1.1.0/24']), st('west', 2, podCidrs))).toThrow(msg);
  });

  it('checks existing links on their own: same CA and distinct ID pass', () => {
    const links = [{ name: remoteSecretName('west'), data: { cluster: 'west', id: '2', 'ca.crt': 'CA-W', 'pod-cidrs': '10.2.1.0/24' } }];
    expect(() => checkExistingLinks('east', links, { cluster: 'west', clusterId: 2, podCidrs: ['10.2.1.0/24'], meshCaPem: 'CA-W' })).not.toThrow();
    expect(() => checkExistingLinks('east', links, { cluster: 'south', clusterId: 4, podCidrs: ['10.4.1.0/24'], meshCaPem: 'CA-S' })).not.toThrow();
    expect(() => checkExistingLinks('east', links, { cluster: 'west', clusterId: 2, podCidrs: ['10.2.1.0/24'], meshCaPem: 'CA-X' })).toThrow(/fingerprint none readable/);
  });
});
