import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkRoom, ProgramError, programErrorOf, SOCK_LB_LIMITS, SocketLb, validateService, type BackendAddr, type Frontend } from './socket-lb.js';
import { FakeBpfMaps } from './test-fakes.js';

const F: Frontend = { ip: '100.64.0.10', port: 80, proto: 'TCP' };
const be = (n: number): BackendAddr => ({ ip: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, port: 8080 });
const bes = (from: number, count: number) => Array.from({ length: count }, (_, i) => be(from + i));

function refusal(fn: () => void): ProgramError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProgramError);
    return err as ProgramError;
  }
  throw new Error('expected a ProgramError, nothing was thrown');
}

const lbOn = (maps: FakeBpfMaps) => new SocketLb(undefined, () => maps);

describe('limits', () => {
  it('mirror datapath/bpf/sock_lb.c', async () => {
    const { readFileSync } = await import('node:fs');
    const src = readFileSync(new URL('./bpf/sock_lb.c', import.meta.url), 'utf8');
    const maxEntries = (map: string) => Number(new RegExp(`max_entries, (\\d+)\\);[^}]*\\} ${map} SEC`).exec(src)?.[1]);
    expect(maxEntries('skein_services')).toBe(SOCK_LB_LIMITS.servicesMapEntries);
    expect(maxEntries('skein_backends')).toBe(SOCK_LB_LIMITS.backendsMapEntries);
    expect(src).toMatch(/__u16 slot;/);
    expect(SOCK_LB_LIMITS.maxBackendsPerFrontend).toBe(0xffff);
  });
});

describe('validateService (no BPF)', () => {
  it('refuses more backends than the 16-bit slot table holds, naming the limit and the fix', () => {
    expect(() => validateService(F, bes(1, 0xffff))).not.toThrow();
    const e = refusal(() => validateService(F, bes(1, 0x10000)));
    expect(e.reason).toBe('too-many-backends');
    expect(e.message).toMatch(/TCP\/100\.64\.0\.10:80 has 65536 active backends; a frontend holds at most 65535 .*sock_lb\.c.*reduce the service's endpoints or split it/);
  });

  it('refuses bad addresses, ports and protocols as bad-address, naming the field', () => {
    expect(refusal(() => validateService({ ...F, ip: '10.0.0.256' }, [])).message).toMatch(/frontend: "10\.0\.0\.256" is not an IPv4 address/);
    expect(refusal(() => validateService({ ...F, port: 0 }, [])).reason).toBe('bad-address');
    expect(refusal(() => validateService({ ...F, port: 70000 }, [])).message).toMatch(/port 70000 is out of range/);
    expect(refusal(() => validateService({ ...F, proto: 'SCTP' as 'TCP' }, [])).message).toMatch(/protocol SCTP is not supported .*only TCP and UDP/);
    const e = refusal(() => validateService(F, [be(1), { ip: '10.0.0.1', port: 65536 }]));
    expect(e.reason).toBe('bad-address');
    expect(e.message).toMatch(/backend 1 \(10\.0\.0\.1:65536\): port 65536 is out of range/);
  });
});

describe('checkRoom and programErrorOf (no BPF)', () => {
  it('refuses a write past a map size as map-full, naming the map, its size and the fix', () => {
    expect(() => checkRoom('skein_services', 10, 6, 16, F)).not.toThrow();
    const e = refusal(() => checkRoom('skein_services', 10, 7, 16, F));
    expect(e.reason).toBe('map-full');
    expect(e.message).toMatch(/needs 7 more entries in BPF map skein_services, which holds 10 of 16 .*raise max_entries in datapath\/bpf\/sock_lb\.c/);
  });

  it('classifies what the addon throws: E2BIG is a full map, a RangeError a bad value, the rest the kernel', () => {
    expect(programErrorOf(Object.assign(new Error('update skein_services: Argument list too long (errno 7)'), { errno: 7 }), F).reason).toBe('map-full');
    expect(programErrorOf(new RangeError('The value of "value" is out of range.'), F).reason).toBe('bad-address');
    expect(programErrorOf(Object.assign(new Error('update skein_services: Operation not permitted (errno 1)'), { errno: 1 }), F)).toMatchObject({ reason: 'kernel', message: expect.stringContaining('Operation not permitted') });
  });
});

describe('SocketLb on in-memory maps', () => {
  it('programs master and slots, and reads its limits from the maps', () => {
    const maps = new FakeBpfMaps({ skein_services: 32, skein_backends: 16, skein_revnat: 16 });
    const lb = lbOn(maps);
    expect(lb.limits).toEqual({ servicesMapEntries: 32, backendsMapEntries: 16, maxBackendsPerFrontend: 0xffff, healthMapEntries: 65_536 });
    lb.setService(F, bes(1, 3));
    expect(maps.decode()).toEqual({ services: { 'TCP/100.64.0.10:80': ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'] }, problems: [] });
    expect(lb.usage()).toEqual({ servicesMapEntries: 4, backendsMapEntries: 3 });
    lb.setService(F, bes(2, 1));
    expect(maps.decode().services).toEqual({ 'TCP/100.64.0.10:80': ['10.0.0.2:8080'] });
    expect(lb.usage()).toEqual({ servicesMapEntries: 2, backendsMapEntries: 1 });
    lb.deleteService(F);
    expect(maps.snapshot()).toEqual({ skein_services: {}, skein_backends: {}, skein_revnat: {}, skein_health: {}, skein_config: {}, skein_failure_seq: {}, skein_pending: {}, skein_pending_sent: {} });
    expect(lb.usage()).toEqual({ servicesMapEntries: 0, backendsMapEntries: 0 });
  });

  it('refuses a frontend with more backends than a slot table holds before touching a map (no RangeError)', () => {
    const maps = new FakeBpfMaps();
    const lb = lbOn(maps);
    const e = refusal(() => lb.setService(F, bes(1, 70_000)));
    expect(e.reason).toBe('too-many-backends');
    expect(maps.ops).toEqual([]);
  });

  it('refuses a service that cannot fit before writing, and one without backends never needs room', () => {
    const maps = new FakeBpfMaps({ skein_services: 10, skein_backends: 100, skein_revnat: 1 });
    const lb = lbOn(maps);
    lb.setService(F, bes(1, 9)); // master + 9 slots: full
    const ops = maps.ops.length;
    const other: Frontend = { ip: '100.64.0.11', port: 80, proto: 'TCP' };
    const e = refusal(() => lb.setService(other, bes(1, 1)));
    expect(e.reason).toBe('map-full');
    expect(e.message).toMatch(/skein_services, which holds 10 of 10/);
    expect(maps.ops.length).toBe(ops);
    expect(() => lb.setService(other, [])).not.toThrow();
    // Shrinking a service frees room for the other.
    lb.setService(F, bes(1, 7));
    lb.setService(other, bes(1, 1));
    expect(maps.decode()).toEqual({ services: { 'TCP/100.64.0.10:80': bes(1, 7).map((b) => `${b.ip}:${b.port}`), 'TCP/100.64.0.11:80': ['10.0.0.1:8080'] }, problems: [] });
  });

  it('counts distinct backends against skein_backends (shared addresses take one entry)', () => {
    const lb = lbOn(new FakeBpfMaps({ skein_services: 100, skein_backends: 4, skein_revnat: 1 }));
    lb.setService(F, bes(1, 4));
    lb.setService({ ...F, proto: 'UDP' }, bes(1, 4)); // the same four addresses
    const e = refusal(() => lb.setService({ ...F, port: 81 }, bes(5, 1)));
    expect(e.message).toMatch(/needs 1 more entries in BPF map skein_backends, which holds 4 of 4/);
  });

  // The kernel can refuse what the counts allowed (entries this object does not know of): each step of the
  // write fails in turn, and every time the maps end exactly as they were and the object still works.
  it('rolls back a write the kernel refuses halfway: the frontend keeps its previous backends', () => {
    const next = bes(10, 5); // 5 new backends, 2 more slots than before
    for (let allowed = 0; allowed < 7; allowed++) {
      const maps = new FakeBpfMaps();
      const lb = lbOn(maps);
      lb.setService(F, bes(1, 3));
      const before = maps.snapshot();
      const usage = lb.usage();
      maps.insertsLeft = allowed; // 5 backend inserts, then slots 4 and 5
      const e = refusal(() => lb.setService(F, next));
      expect(e.reason).toBe('map-full');
      expect(e.message).toMatch(/Argument list too long/);
      expect(maps.snapshot()).toEqual(before);
      expect(lb.usage()).toEqual(usage);
      maps.insertsLeft = undefined;
      lb.setService(F, next);
      expect(maps.decode()).toEqual({ services: { 'TCP/100.64.0.10:80': next.map((b) => `${b.ip}:${b.port}`) }, problems: [] });
      expect(Object.keys(maps.snapshot().skein_backends!)).toHaveLength(5);
    }
  });

  it('rolls back a new frontend whose master the kernel refuses: it stays absent', () => {
    const maps = new FakeBpfMaps();
    const lb = lbOn(maps);
    maps.insertsLeft = 4; // 2 backends, 2 slots, not the master
    expect(refusal(() => lb.setService(F, bes(1, 2))).reason).toBe('map-full');
    expect(maps.snapshot()).toEqual({ skein_services: {}, skein_backends: {}, skein_revnat: {}, skein_health: {}, skein_config: {}, skein_failure_seq: {}, skein_pending: {}, skein_pending_sent: {} });
    expect(lb.usage()).toEqual({ servicesMapEntries: 0, backendsMapEntries: 0 });
  });

  it('restores slots it had overwritten when a later write fails', () => {
    const maps = new FakeBpfMaps();
    const lb = lbOn(maps);
    lb.setService(F, bes(1, 4));
    const before = maps.snapshot();
    let writes = 0;
    // Slots are overwritten in place (no insert): the third such write fails.
    maps.failUpdate = (map, key) => (map === 'skein_services' && key.readUInt16LE(8) > 0 && ++writes === 3 ? Object.assign(new Error('update skein_services: Operation not permitted (errno 1)'), { errno: 1 }) : undefined);
    const e = refusal(() => lb.setService(F, bes(20, 3)));
    expect(e.reason).toBe('kernel');
    maps.failUpdate = undefined;
    expect(maps.snapshot()).toEqual(before);
    expect(maps.decode().services['TCP/100.64.0.10:80']).toEqual(bes(1, 4).map((b) => `${b.ip}:${b.port}`));
  });

  it('adopts pinned maps, dropping slots no count reaches and backends no slot uses', () => {
    const maps = new FakeBpfMaps();
    const first = lbOn(maps);
    first.setService(F, bes(1, 2));
    // What an agent killed mid-write leaves: a third slot and its backend, the count still 2.
    const key = Buffer.from(Object.keys(maps.snapshot().skein_services!).find((k) => Buffer.from(k, 'hex').readUInt16LE(8) === 1)!, 'hex');
    key.writeUInt16LE(3, 8);
    const id = Buffer.alloc(4);
    id.writeUInt32LE(99);
    maps.update('skein_backends', id, Buffer.from([10, 9, 9, 9, 0x1f, 0x90, 0, 0]));
    maps.update('skein_services', key, Buffer.from([0, 0, 0, 0, 99, 0, 0, 0]));
    const second = lbOn(maps);
    expect(second.adopt()).toEqual([{ frontend: F, backends: bes(1, 2) }]);
    expect(Object.keys(maps.snapshot().skein_services!)).toHaveLength(3);
    expect(Object.keys(maps.snapshot().skein_backends!)).toHaveLength(2);
    expect(second.usage()).toEqual({ servicesMapEntries: 3, backendsMapEntries: 2 });
    // New backend IDs continue after the highest seen (99), never reusing one a live slot may hold.
    second.setService({ ...F, port: 81 }, [be(7)]);
    expect(maps.snapshot().skein_backends![Buffer.from([100, 0, 0, 0]).toString('hex')]).toBeDefined();
    expect(maps.decode().problems).toEqual([]);
  });
});

describe('weights by repetition (spillover, datapath/agent/spillover.ts)', () => {
  it('takes a backend listed several times as that many slots, one skein_backends entry, released once no slot uses it', () => {
    const maps = new FakeBpfMaps({ skein_services: 32, skein_backends: 16, skein_revnat: 16 });
    const lb = lbOn(maps);
    const [a, b] = [be(1), be(2)];
    lb.setService(F, [a, a, a, b]);
    expect(maps.decode()).toEqual({ services: { 'TCP/100.64.0.10:80': ['10.0.0.1:8080', '10.0.0.1:8080', '10.0.0.1:8080', '10.0.0.2:8080'] }, problems: [] });
    expect(lb.usage()).toEqual({ servicesMapEntries: 5, backendsMapEntries: 2 });
    expect(lb.activeCount(F)).toBe(4);

    // A restarted agent adopts the weights, counting every slot's use.
    const adopted = lbOn(maps);
    expect(adopted.adopt()).toEqual([{ frontend: F, backends: [a, a, a, b] }]);
    adopted.setService(F, [a, b, b]);
    expect(maps.decode().services).toEqual({ 'TCP/100.64.0.10:80': ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.2:8080'] });
    expect(adopted.usage()).toEqual({ servicesMapEntries: 4, backendsMapEntries: 2 });
    adopted.setService(F, [b]);
    expect(adopted.usage()).toEqual({ servicesMapEntries: 2, backendsMapEntries: 1 });
    adopted.deleteService(F);
    expect(adopted.usage()).toEqual({ servicesMapEntries: 0, backendsMapEntries: 0 });
    expect(maps.decode()).toEqual({ services: {}, problems: [] });
  });
});

describe('pins of an older datapath', () => {
  it('removes the pins that name no map of this one (a renamed map), and keeps every current map', () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-pins-'));
    try {
      const maps = new FakeBpfMaps();
      for (const name of [...maps.maps(), 'skein_pending_acked']) writeFileSync(join(dir, name), '');
      const lb = new SocketLb(dir, () => maps);
      expect(lb.removeObsoletePins()).toEqual(['skein_pending_acked']);
      expect(readdirSync(dir).sort()).toEqual([...maps.maps()].sort());
      expect(lb.removeObsoletePins()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
