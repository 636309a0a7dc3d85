import { describe, expect, it } from 'vitest';
import type { Backend, GlobalService } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import { activeBackends } from './policy.js';

const be = (ip: string, ready = true, extra: Partial<Backend> = {}): Backend => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' } }, ready, serving: ready, terminating: false, ...extra });
const svc = (cluster: string, backends: Backend[]): GlobalService => ({ cluster, namespace: 'default', name: 'echo', shared: true, affinity: 'local', clusterIps: cluster === 'east' ? ['100.64.0.10'] : ['100.64.9.9'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], backends });
const merged = (affinity: MergedService['affinity'], east: Backend[], west: Backend[], westStale = false): MergedService => ({
  namespace: 'default',
  name: 'echo',
  global: true,
  affinity,
  clusters: [
    { cluster: 'east', local: true, stale: false, service: svc('east', east) },
    { cluster: 'west', local: false, stale: westStale, service: svc('west', west) },
  ],
});
const ips = (m: MergedService) => activeBackends(m)[0]!.backends.map((b) => b.ip).sort();

describe('affinity policy', () => {
  it('programs the local ClusterIP and port with backend ports', () => {
    expect(activeBackends(merged('none', [be('10.1.1.2')], []))).toEqual([{ frontend: { ip: '100.64.0.10', port: 80, proto: 'TCP' }, backends: [{ ip: '10.1.1.2', port: 8080 }] }]);
  });
  it('local: local ready backends only, remote only when no local one is ready, back when one returns', () => {
    expect(ips(merged('local', [be('10.1.1.2'), be('10.1.1.3', false)], [be('10.2.1.2')]))).toEqual(['10.1.1.2']);
    expect(ips(merged('local', [be('10.1.1.3', false)], [be('10.2.1.2')]))).toEqual(['10.2.1.2']);
    expect(ips(merged('local', [], [be('10.2.1.2'), be('10.2.1.3')]))).toEqual(['10.2.1.2', '10.2.1.3']);
  });
  it('remote: the reverse', () => {
    expect(ips(merged('remote', [be('10.1.1.2')], [be('10.2.1.2')]))).toEqual(['10.2.1.2']);
    expect(ips(merged('remote', [be('10.1.1.2')], [be('10.2.1.2', false)]))).toEqual(['10.1.1.2']);
  });
  it('none: every ready backend', () => {
    expect(ips(merged('none', [be('10.1.1.2')], [be('10.2.1.2')]))).toEqual(['10.1.1.2', '10.2.1.2']);
  });
  it('terminating-but-serving backends only when nothing ready is left', () => {
    const term = be('10.1.1.9', false, { serving: true, terminating: true });
    expect(ips(merged('local', [term], [be('10.2.1.2')]))).toEqual(['10.2.1.2']);
    expect(ips(merged('local', [term], [be('10.2.1.2', false)]))).toEqual(['10.1.1.9']);
  });
  it("a stale remote's backends only when no fresh cluster can serve", () => {
    expect(ips(merged('none', [be('10.1.1.2')], [be('10.2.1.2')], true))).toEqual(['10.1.1.2']);
    expect(ips(merged('local', [], [be('10.2.1.2')], true))).toEqual(['10.2.1.2']);
  });
  it('nothing usable: the frontend is programmed empty (connects pass through)', () => {
    expect(activeBackends(merged('local', [be('10.1.1.2', false)], []))[0]!.backends).toEqual([]);
  });
});

describe('stale remotes and spillover', () => {
  /** east (local) and remotes, each [name, backends, stale]; local affinity options on east. */
  const mesh = (affinity: MergedService['affinity'], east: Backend[], remotes: [string, Backend[], boolean][], localMinReady?: MergedService['localMinReady']): MergedService => ({
    namespace: 'default',
    name: 'echo',
    global: true,
    affinity,
    ...(localMinReady ? { localMinReady } : {}),
    clusters: [{ cluster: 'east', local: true, stale: false, service: svc('east', east) }, ...remotes.map(([cluster, backends, stale]) => ({ cluster, local: false, stale, service: svc(cluster, backends) }))],
  });
  const slots = (m: MergedService, ejected?: Set<string>) => activeBackends(m, ejected)[0]!.backends.map((b) => b.ip);
  const count = (list: string[]) => Object.fromEntries([...new Set(list)].sort().map((ip) => [ip, list.filter((x) => x === ip).length]));

  it('none: a stale remote leaves the active set while any fresh backend is ready, and comes back when fresh', () => {
    const west = be('10.2.1.2');
    const south = be('10.3.1.2');
    expect(ips(mesh('none', [be('10.1.1.2')], [['west', [west], false], ['south', [south], true]]))).toEqual(['10.1.1.2', '10.2.1.2']);
    expect(ips(mesh('none', [], [['west', [west], false], ['south', [south], true]]))).toEqual(['10.2.1.2']);
    expect(ips(mesh('none', [be('10.1.1.2')], [['west', [west], false], ['south', [south], false]]))).toEqual(['10.1.1.2', '10.2.1.2', '10.3.1.2']);
  });

  it('local: with no local backend ready, a fresh remote is preferred to a stale one', () => {
    const remotes: [string, Backend[], boolean][] = [['south', [be('10.3.1.2')], true], ['west', [be('10.2.1.2'), be('10.2.1.3')], false]];
    expect(ips(mesh('local', [be('10.1.1.2', false)], remotes))).toEqual(['10.2.1.2', '10.2.1.3']);
    expect(ips(mesh('local', [be('10.1.1.2')], remotes))).toEqual(['10.1.1.2']);
  });

  it('every ready candidate stale: they are used after all (better than nothing), for none and local alike', () => {
    const remotes: [string, Backend[], boolean][] = [['south', [be('10.3.1.2')], true], ['west', [be('10.2.1.2')], true]];
    expect(ips(mesh('none', [], remotes))).toEqual(['10.2.1.2', '10.3.1.2']);
    expect(ips(mesh('local', [be('10.1.1.2', false)], remotes))).toEqual(['10.2.1.2', '10.3.1.2']);
  });

  it('spillover: below local-min-ready, local and fresh remote backends together, the local share L/M', () => {
    const west: [string, Backend[], boolean] = ['west', [be('10.2.1.2'), be('10.2.1.3')], false];
    // M = 4 of 4 local endpoints ("100%"), L = 1: local 1/4 → the local backend 2 slots, each remote 3.
    const east = [be('10.1.1.2'), be('10.1.1.3', false), be('10.1.1.4', false), be('10.1.1.5', false)];
    expect(count(slots(mesh('local', east, [west], { percent: 100 })))).toEqual({ '10.1.1.2': 2, '10.2.1.2': 3, '10.2.1.3': 3 });
    // L = 2 of M = 4: half.
    east[1] = be('10.1.1.3');
    expect(count(slots(mesh('local', east, [west], { count: 4 })))).toEqual({ '10.1.1.2': 1, '10.1.1.3': 1, '10.2.1.2': 1, '10.2.1.3': 1 });
    // L ≥ M: local only (today's behaviour); L = 0: remote only.
    expect(ips(mesh('local', east, [west], { count: 2 }))).toEqual(['10.1.1.2', '10.1.1.3']);
    expect(ips(mesh('local', [be('10.1.1.2', false)], [west], { count: 2 }))).toEqual(['10.2.1.2', '10.2.1.3']);
    // Without the annotation: all or nothing, as before.
    expect(ips(mesh('local', east, [west]))).toEqual(['10.1.1.2', '10.1.1.3']);
  });

  it('spillover goes to fresh remotes only, and only with affinity local', () => {
    const east = [be('10.1.1.2'), be('10.1.1.3', false)];
    expect(ips(mesh('local', east, [['west', [be('10.2.1.2')], true]], { count: 2 }))).toEqual(['10.1.1.2']);
    expect(count(slots(mesh('local', east, [['west', [be('10.2.1.2')], false], ['south', [be('10.3.1.2')], true]], { count: 2 })))).toEqual({ '10.1.1.2': 1, '10.2.1.2': 1 });
    expect(ips(mesh('none', east, [['west', [be('10.2.1.2')], false]], { count: 2 }))).toEqual(['10.1.1.2', '10.2.1.2']);
    expect(ips(mesh('remote', east, [['west', [be('10.2.1.2')], false]], { count: 2 }))).toEqual(['10.2.1.2']);
  });

  it('an ejected local backend counts as missing capacity: spillover starts', () => {
    const east = [be('10.1.1.2'), be('10.1.1.3')];
    const m = mesh('local', east, [['west', [be('10.2.1.2')], false]], { count: 2 });
    expect(ips(m)).toEqual(['10.1.1.2', '10.1.1.3']);
    expect(count(slots(m, new Set(['TCP/10.1.1.3:8080'])))).toEqual({ '10.1.1.2': 1, '10.2.1.2': 1 });
  });
});
