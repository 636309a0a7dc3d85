// The policy with backends outlier detection ejected (outliers.ts): they leave the active set as if not
// ready, "all local backends ejected" fails over like "no local backend ready", and ejection alone never
// empties a frontend.
import { describe, expect, it } from 'vitest';
import type { Backend, GlobalService } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import { activeBackends } from './policy.js';
import { OutlierDetector, serviceBackends, type HealthSample } from './outliers.js';

const be = (ip: string, ready = true): Backend => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' }, dns: { port: 53, protocol: 'UDP' } }, ready, serving: ready, terminating: false });
const svc = (cluster: string, backends: Backend[]): GlobalService => ({
  cluster,
  namespace: 'default',
  name: 'echo',
  shared: true,
  affinity: 'local',
  clusterIps: cluster === 'east' ? ['100.64.0.10'] : ['100.64.9.9'],
  ports: [
    { name: 'http', port: 80, protocol: 'TCP' },
    { name: 'dns', port: 53, protocol: 'UDP' },
  ],
  backends,
});
const merged = (affinity: MergedService['affinity'], east: Backend[], west: Backend[]): MergedService => ({
  namespace: 'default',
  name: 'echo',
  global: true,
  affinity,
  clusters: [
    { cluster: 'east', local: true, stale: false, service: svc('east', east) },
    { cluster: 'west', local: false, stale: false, service: svc('west', west) },
  ],
});
const active = (m: MergedService, ejected: string[]) => Object.fromEntries(activeBackends(m, new Set(ejected)).map((p) => [`${p.frontend.proto}/${p.frontend.port}`, p.backends.map((b) => b.ip).sort()]));

describe('affinity policy with ejected backends', () => {
  it('an ejected backend leaves the active set of that port only', () => {
    expect(active(merged('local', [be('10.1.1.2'), be('10.1.1.3')], [be('10.2.1.2')]), ['TCP/10.1.1.2:8080'])).toEqual({ 'TCP/80': ['10.1.1.3'], 'UDP/53': ['10.1.1.2', '10.1.1.3'] });
  });
  it('local: all local backends ejected fails over to remote, as if none were ready', () => {
    const m = merged('local', [be('10.1.1.2'), be('10.1.1.3')], [be('10.2.1.2'), be('10.2.1.3')]);
    expect(active(m, ['TCP/10.1.1.2:8080', 'TCP/10.1.1.3:8080'])['TCP/80']).toEqual(['10.2.1.2', '10.2.1.3']);
    expect(active(m, ['TCP/10.1.1.2:8080'])['TCP/80']).toEqual(['10.1.1.3']);
  });
  it('remote and none: the same, the other way round and over all', () => {
    expect(active(merged('remote', [be('10.1.1.2')], [be('10.2.1.2')]), ['TCP/10.2.1.2:8080'])['TCP/80']).toEqual(['10.1.1.2']);
    expect(active(merged('none', [be('10.1.1.2')], [be('10.2.1.2')]), ['TCP/10.2.1.2:8080'])['TCP/80']).toEqual(['10.1.1.2']);
  });
  it('ejection alone never empties a frontend', () => {
    expect(active(merged('local', [be('10.1.1.2')], []), ['TCP/10.1.1.2:8080'])['TCP/80']).toEqual(['10.1.1.2']);
  });
  it('nothing ejected: exactly as before', () => {
    const m = merged('local', [be('10.1.1.2'), be('10.1.1.3', false)], [be('10.2.1.2')]);
    expect(activeBackends(m, new Set())).toEqual(activeBackends(m));
  });

  it('end to end with the detector: both local backends fail, the share allows it (2 of 4), traffic fails over to remote and comes back', () => {
    const m = merged('local', [be('10.1.1.2'), be('10.1.1.3')], [be('10.2.1.2'), be('10.2.1.3')]);
    const d = new OutlierDetector({ baseEjectionMs: 1000 });
    const services = new Map([['default/echo', serviceBackends(m)]]);
    const tcp = (consecutive: number, successes = 0): HealthSample => ({ proto: 'TCP', successes, consecutive, lastSuccessMs: 0, lastFailureMs: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0 });
    const samples = new Map([
      ['TCP/10.1.1.2:8080', tcp(3)],
      ['TCP/10.1.1.3:8080', tcp(4)],
    ]);
    d.observe(samples, services, 0);
    expect(active(m, [...d.ejectedKeys()])['TCP/80']).toEqual(['10.2.1.2', '10.2.1.3']);
    // Recovered: back after the ejection time; a success ends probation.
    d.observe(samples, services, 1000);
    expect(active(m, [...d.ejectedKeys()])['TCP/80']).toEqual(['10.1.1.2', '10.1.1.3']);
    samples.set('TCP/10.1.1.2:8080', tcp(0, 1));
    samples.set('TCP/10.1.1.3:8080', tcp(0, 1));
    d.observe(samples, services, 1100);
    expect(d.ejectedKeys().size).toBe(0);
  });
});
