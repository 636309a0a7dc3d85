import { describe, expect, it } from 'vitest';
import { keys, parseExportKey } from './schema/keys.js';
import { decodeValue, type GlobalService } from './schema/values.js';
import { clusterIdOf, forbiddenRangeOf, formatPin, LocalNetworks, PeerPolicy, pinError, Subnet } from './address-policy.js';
import { RemoteSecret } from './link-secrets.js';

// east (ID 1, pods 10.1.1.0/24, Services 100.64.0.0/16) judges what west (ID 2, pinned 10.2.1.0/24 and 10.2.2.0/24) claims.
const local = new LocalNetworks('east', '100.64.0.0/16');
local.setPodCidrs(['10.1.1.0/24']);
const policy = new PeerPolicy({ name: 'west', id: 2, podCidrs: ['10.2.1.0/24', '10.2.2.0/24'] }, local);
const WEST_IDENTITY = (2 << 16) | 300;

const backend = (ip: string) => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' } }, ready: true, serving: true, terminating: false });
const service = (...ips: string[]) => ({ cluster: 'west', namespace: 'default', name: 'echo', shared: true, affinity: 'local', clusterIps: ['100.64.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], backends: ips.map(backend) });
const node = (addresses: string[], podCidrs: string[]) => ({ name: 'west-node-1', cluster: 'west', addresses: addresses.map((ip) => ({ type: 'InternalIP', ip })), podCidrs });

/** Decodes like the sync does (schema first), then asks the policy. */
function judge(key: string, value: object) {
  const parsed = parseExportKey(key)!;
  const d = decodeValue(parsed, JSON.stringify(value));
  if (!d.ok) return { reason: 'schema', detail: d.error };
  return policy.check(d);
}
const svcKey = keys.service('west', 'default', 'echo');

describe('subnets (node:net BlockList)', () => {
  it('masks host bits and tests membership at both ends', () => {
    const s = Subnet.parse('10.2.1.77/24')!;
    expect([s.text, s.first, s.last]).toEqual(['10.2.1.0/24', '10.2.1.0', '10.2.1.255']);
    expect(s.contains('10.2.1.0')).toBe(true);
    expect(s.contains('10.2.1.255')).toBe(true);
    expect(s.contains('10.2.2.0')).toBe(false);
    expect(s.contains('10.2.1.256')).toBe(false);
    expect(Subnet.parse('0.0.0.0/0')!.contains('255.255.255.255')).toBe(true);
    expect(Subnet.parse('10.2.0.0/16')!.covers(Subnet.parse('10.2.9.0/24')!)).toBe(true);
    expect(Subnet.parse('10.2.9.0/24')!.covers(Subnet.parse('10.2.0.0/16')!)).toBe(false);
    expect(Subnet.parse('10.2.9.0/24')!.overlaps(Subnet.parse('10.2.0.0/16')!)).toBe(true);
    expect(Subnet.parse('10.2.9.0/24')!.overlaps(Subnet.parse('10.2.10.0/24')!)).toBe(false);
  });
  it.each(['1.2.3.256/24', '01.2.3.4/8', ' 1.2.3.4/8', '1.2.3.4/33', '1.2.3.4/08', '1.2.3.4', '1.2.3.4/', '1.2.3/24', '1.2.3.4/-1'])('refuses %j', (text) => {
    expect(Subnet.parse(text)).toBeUndefined();
  });
});

describe('forbidden ranges', () => {
  it.each([
    ['0.0.0.0', /unspecified/],
    ['0.1.2.3', /unspecified/],
    ['127.0.0.1', /loopback/],
    ['127.255.255.254', /loopback/],
    ['169.254.169.254', /link-local/],
    ['224.0.0.1', /multicast/],
    ['239.255.255.255', /multicast/],
    ['240.0.0.1', /reserved/],
    ['255.255.255.255', /broadcast/],
  ])('%s is never an address a peer may claim', (ip, what) => {
    expect(forbiddenRangeOf(ip)).toMatch(what);
  });
  it.each(['1.0.0.0', '10.2.1.5', '126.255.255.255', '128.0.0.0', '169.253.255.255', '169.255.0.0', '223.255.255.255'])('%s is not forbidden', (ip) => {
    expect(forbiddenRangeOf(ip)).toBeUndefined();
  });
  it('flags a subnet overlapping a forbidden range', () => {
    expect(forbiddenRangeOf(Subnet.parse('0.0.0.0/0')!)).toMatch(/unspecified/);
    expect(forbiddenRangeOf(Subnet.parse('169.0.0.0/8')!)).toMatch(/link-local/);
    expect(forbiddenRangeOf(Subnet.parse('10.0.0.0/8')!)).toBeUndefined();
  });
});

describe('the pin skein connect stores', () => {
  it('is canonical, deduplicated and in address order', () => {
    expect(formatPin(['10.2.2.0/24', '10.2.1.9/24', '10.2.1.0/24', '9.0.0.0/8'])).toBe('9.0.0.0/8,10.2.1.0/24,10.2.2.0/24');
    expect(() => formatPin(['10.2.1.0/33'])).toThrow(/"10.2.1.0\/33" is not an IPv4 CIDR/);
  });
  it.each([
    ['', /no pod CIDRs/],
    ['10.2.1.0/24,', /"" is not an IPv4 CIDR/],
    ['10.2.1.0/24, 10.2.2.0/24', /" 10.2.2.0\/24" is not an IPv4 CIDR/],
    ['10.2.1.7/24', /host bits set: write its network address, 10.2.1.0\/24/],
    ['0.0.0.0/0', /overlaps unspecified/],
    ['127.0.0.0/16', /overlaps loopback/],
  ])('refuses to pin %j', (text, msg) => {
    expect(pinError(text)).toMatch(msg);
  });
  it('is a required, validated field of the link Secret', () => {
    const link = { cluster: 'west', id: '2', endpoint: 'https://10.0.0.1:2379', 'ca.crt': 'BEGIN CERTIFICATE', 'bundle.crt': 'BEGIN CERTIFICATE', 'tls.crt': 'BEGIN CERTIFICATE', 'tls.key': 'PRIVATE KEY', 'trust-domain': 'west.skein' };
    expect(RemoteSecret.safeParse({ ...link, 'pod-cidrs': '10.2.1.0/24,10.2.2.0/24' }).success).toBe(true);
    const issue = (data: object) => {
      const r = RemoteSecret.safeParse(data);
      return r.success ? undefined : `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`;
    };
    expect(issue(link)).toMatch(/^pod-cidrs: the link has no pinned pod CIDRs .*run skein connect again/);
    expect(issue({ ...link, 'pod-cidrs': '127.0.0.0/8' })).toMatch(/^pod-cidrs: 127.0.0.0\/8 overlaps loopback.*; run skein connect again$/);
    expect(issue({ ...link, 'pod-cidrs': '10.2.1.0/24', id: '0' })).toMatch(/^id: .*1-255/);
    expect(issue({ ...link, 'pod-cidrs': '10.2.1.0/24', id: '256' })).toMatch(/^id: .*1-255/);
  });
});

describe("a peer's policy", () => {
  it('accepts backends inside the pin', () => {
    expect(judge(svcKey, service('10.2.1.5', '10.2.2.200'))).toBeUndefined();
  });
  it.each([
    ['127.0.0.1', 'forbidden-address', /backends\[1\]\.ip 127.0.0.1 is loopback/],
    ['169.254.169.254', 'forbidden-address', /link-local/],
    ['0.0.0.0', 'forbidden-address', /unspecified/],
    ['224.0.0.251', 'forbidden-address', /multicast/],
    ['255.255.255.255', 'forbidden-address', /broadcast/],
    ['10.1.1.7', 'local-cidr', /east's own pod CIDR 10.1.1.0\/24/],
    ['100.64.0.1', 'local-cidr', /east's own Service CIDR 100.64.0.0\/16/],
    ['10.2.3.4', 'outside-pinned-cidrs', /outside west's pinned pod CIDRs \(10.2.1.0\/24, 10.2.2.0\/24\); .*run skein connect again/],
    ['10.1.0.3', 'outside-pinned-cidrs', /outside west's pinned/],
    ['1.2.3.256', 'schema', /backends\.1\.ip: expected an IPv4 address/],
    ['01.2.3.4', 'schema', /expected an IPv4 address/],
    [' 10.2.1.5', 'schema', /expected an IPv4 address/],
  ])('refuses a backend %j (%s) even next to a good one', (ip, reason, detail) => {
    const r = judge(svcKey, service('10.2.1.5', ip));
    expect(r?.reason).toBe(reason);
    expect(r?.detail).toMatch(detail);
  });
  it('refuses an address in a forbidden range even if the pin covered it', () => {
    const wide = new PeerPolicy({ name: 'west', id: 2, podCidrs: ['0.0.0.0/0'] }, local);
    const check = (ip: string) => wide.check({ kind: 'services', value: service(ip) as GlobalService })?.reason;
    expect(check('127.0.0.1')).toBe('forbidden-address');
    expect(check('10.1.1.9')).toBe('local-cidr');
    expect(check('8.8.8.8')).toBeUndefined();
  });
  it('checks ips/<ip> entries: the address and the identity', () => {
    const entry = (ip: string, identity: number) => ({ ip, identity, namespace: 'default', pod: 'echo-1' });
    expect(judge(keys.ip('west', '10.2.1.5'), entry('10.2.1.5', WEST_IDENTITY))).toBeUndefined();
    expect(judge(keys.ip('west', '10.9.0.1'), entry('10.9.0.1', WEST_IDENTITY))?.reason).toBe('outside-pinned-cidrs');
    expect(judge(keys.ip('west', '127.0.0.1'), entry('127.0.0.1', WEST_IDENTITY))?.reason).toBe('forbidden-address');
    expect(judge(keys.ip('west', '10.2.1.5'), entry('10.2.1.5', (1 << 16) | 300))).toMatchObject({ reason: 'wrong-cluster-id', detail: 'identity 65836 carries cluster ID 1 in bits 16-23; west\'s identities carry 2' });
    expect(judge(keys.ip('west', '1.2.3.256'), entry('1.2.3.256', WEST_IDENTITY))?.reason).toBe('schema');
  });
  it('checks identities carry the pinned cluster ID in bits 16-23', () => {
    expect(clusterIdOf(WEST_IDENTITY)).toBe(2);
    expect(judge(keys.identity('west', WEST_IDENTITY), { id: WEST_IDENTITY, labels: {} })).toBeUndefined();
    expect(judge(keys.identity('west', (1 << 16) | 300), { id: (1 << 16) | 300, labels: {} })?.reason).toBe('wrong-cluster-id');
    // A reserved identity (cluster ID 0: host, world, …) is no peer's to claim.
    expect(judge(keys.identity('west', 1), { id: 1, labels: {} })?.reason).toBe('wrong-cluster-id');
  });
  it('checks nodes: addresses never forbidden, pod CIDRs inside the pin', () => {
    const key = keys.node('west', 'west-node-1');
    expect(judge(key, node(['10.2.0.3', '203.0.113.9'], ['10.2.1.0/24']))).toBeUndefined();
    expect(judge(key, node(['127.0.0.1'], ['10.2.1.0/24']))).toMatchObject({ reason: 'forbidden-address', detail: expect.stringMatching(/addresses\[0\]\.ip 127.0.0.1 is loopback/) });
    expect(judge(key, node(['169.254.1.1'], ['10.2.1.0/24']))?.reason).toBe('forbidden-address');
    expect(judge(key, node(['10.2.0.3'], ['10.2.1.0/25']))).toBeUndefined();
    expect(judge(key, node(['10.2.0.3'], ['10.2.0.0/16']))).toMatchObject({ reason: 'outside-pinned-cidrs', detail: expect.stringMatching(/^podCidrs\[0\] 10.2.0.0\/16 is not inside west's pinned/) });
    expect(judge(key, node(['10.2.0.3'], ['10.2.3.0/24']))?.reason).toBe('outside-pinned-cidrs');
    expect(judge(key, node(['10.2.0.3'], ['10.1.0.0/16']))?.reason).toBe('local-cidr');
    expect(judge(key, node(['10.2.0.3'], ['127.0.0.0/24']))?.reason).toBe('forbidden-address');
    expect(judge(key, node(['10.2.0.3'], ['10.2.1.0/33']))?.reason).toBe('schema');
  });
  it('checks the config names the pinned ID; its pod CIDRs are informational and widen nothing', () => {
    const config = (id: number, podCidrs: string[]) => ({ name: 'west', id, podCidrs, schema: 'v1' as const });
    expect(judge(keys.config('west'), config(2, ['10.2.1.0/24']))).toBeUndefined();
    expect(judge(keys.config('west'), config(7, ['10.2.1.0/24']))).toMatchObject({ reason: 'wrong-cluster-id', detail: 'config names cluster ID 7; west was pinned at ID 2 by skein connect' });
    const wider = config(2, ['10.0.0.0/8']);
    expect(judge(keys.config('west'), wider)).toBeUndefined();
    expect(policy.beyondPin(wider)).toEqual(['10.0.0.0/8']);
    expect(judge(svcKey, service('10.9.9.9'))?.reason).toBe('outside-pinned-cidrs');
  });
  it("follows this cluster's pod CIDRs as they grow", () => {
    const mine = new LocalNetworks('east');
    const p = new PeerPolicy({ name: 'west', id: 2, podCidrs: ['10.2.0.0/16'] }, mine);
    const svc = { kind: 'services' as const, value: service('10.2.9.1') as GlobalService };
    expect(p.check(svc)).toBeUndefined();
    expect(mine.setPodCidrs(['10.2.9.0/24'])).toBe(true);
    expect(mine.setPodCidrs(['10.2.9.0/24'])).toBe(false);
    expect(p.check(svc)?.reason).toBe('local-cidr');
    expect(() => new LocalNetworks('east', '100.64.0.0/33')).toThrow(/service CIDR "100.64.0.0\/33" is not an IPv4 CIDR/);
  });
  it('lets heartbeats and synced markers through (nothing to claim)', () => {
    expect(judge(keys.heartbeat('west'), { cluster: 'west', at: new Date().toISOString() })).toBeUndefined();
    expect(judge(keys.synced('west', 'services'), { at: new Date().toISOString(), count: 3 })).toBeUndefined();
  });
});
