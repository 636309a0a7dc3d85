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
