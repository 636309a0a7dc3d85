import { describe, expect, it } from 'vitest';
import type { GlobalService } from '../../mesh/schema/values.js';
import { MergedView } from './merged-view.js';

const svc = (cluster: string, over: Partial<GlobalService> = {}): GlobalService => ({
  cluster,
  namespace: 'default',
  name: 'echo',
  shared: true,
  affinity: 'local',
  clusterIps: ['100.64.0.10'],
  ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  backends: [{ ip: cluster === 'east' ? '10.1.1.2' : '10.2.1.2', ports: { http: { port: 8080, protocol: 'TCP' } }, ready: true, serving: true, terminating: false }],
  ...over,
});
const put = (v: MergedView, key: string, value: unknown) => v.apply(key, JSON.stringify(value));

describe('MergedView', () => {
  it('merges the local export with remote caches and says which service each key touched', () => {
    const v = new MergedView('east');
    expect(put(v, '/skein/v1/export/east/services/default/echo', svc('east'))).toEqual(['default/echo']);
    expect(put(v, '/skein/v1/cache/west/services/default/echo', svc('west'))).toEqual(['default/echo']);
    expect(put(v, '/skein/v1/export/east/heartbeat', { cluster: 'east', at: new Date().toISOString() })).toEqual([]);
    const m = v.get('default/echo')!;
    expect(m.clusters.map((c) => [c.cluster, c.local])).toEqual([['east', true], ['west', false]]);
    expect(m.affinity).toBe('local');
  });

  it("takes local-min-ready, like affinity, from the local cluster's export only; a value without it (older versions) has none", () => {
    const v = new MergedView('east');
    put(v, '/skein/v1/cache/west/services/default/echo', svc('west', { localMinReady: { count: 9 } }));
    put(v, '/skein/v1/export/east/services/default/echo', svc('east'));
    expect(v.get('default/echo')).not.toHaveProperty('localMinReady');
    put(v, '/skein/v1/export/east/services/default/echo', svc('east', { localMinReady: { percent: 50 } }));
    expect(v.get('default/echo')!.localMinReady).toEqual({ percent: 50 });
  });

  it('flags a stale remote on the services it has, and only those', () => {
    const v = new MergedView('east');
    put(v, '/skein/v1/export/east/services/default/echo', svc('east'));
    put(v, '/skein/v1/cache/west/services/default/echo', svc('west'));
    put(v, '/skein/v1/export/east/services/default/other', svc('east', { name: 'other' }));
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: true, synced: true, stale: false })).toEqual(['default/echo']);
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: false, synced: true, stale: true })).toEqual(['default/echo']);
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: false, synced: true, stale: true })).toEqual([]); // no change, nothing touched
    expect(v.get('default/echo')!.clusters.find((c) => c.cluster === 'west')!.stale).toBe(true);
  });

  it('reads a remote as fresh only while a live sync vouches for it: a missing, unreadable or unsynced status is stale', () => {
    const v = new MergedView('east');
    const west = () => v.get('default/echo')!.clusters.find((c) => c.cluster === 'west')!;
    put(v, '/skein/v1/export/east/services/default/echo', svc('east'));
    // A cache with no status (a brand-new remote before its first status, or an importer that is gone).
    put(v, '/skein/v1/cache/west/services/default/echo', svc('west'));
    expect(west().stale).toBe(true);
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: true, synced: true, stale: false })).toEqual(['default/echo']);
    expect(west().stale).toBe(false);
    // The importer died: its lease expired and took the status along.
    expect(v.apply('/skein/v1/sync/west/status', undefined)).toEqual(['default/echo']);
    expect(west().stale).toBe(true);
    // A restarted importer that has not synced yet does not vouch for the cache it inherited.
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: false, synced: false, stale: false })).toEqual([]);
    expect(west().stale).toBe(true);
    expect(put(v, '/skein/v1/sync/west/status', { cluster: 'west', connected: true, synced: true, stale: false })).toEqual(['default/echo']);
    expect(v.apply('/skein/v1/sync/west/status', '{"stale":')).toEqual(['default/echo']);
    expect(west().stale).toBe(true);
    // Stale only orders backends: the stale remote's ready backends are all there, for the policy to fall back on.
    expect(west().service.backends).toHaveLength(1);
  });

  it('ignores invalid values, other clusters writing as us, and non-shared remotes; removes on delete', () => {
    const v = new MergedView('east');
    expect(v.apply('/skein/v1/cache/west/services/default/echo', '{"nope":1}')).toEqual([]);
    expect(put(v, '/skein/v1/export/west/services/default/echo', svc('west'))).toEqual([]); // not our export
    put(v, '/skein/v1/cache/west/services/default/echo', svc('west', { shared: false }));
    expect(v.get('default/echo')).toBeUndefined();
    put(v, '/skein/v1/export/east/services/default/echo', svc('east'));
    expect(v.get('default/echo')!.clusters.map((c) => c.cluster)).toEqual(['east']);
    expect(v.apply('/skein/v1/export/east/services/default/echo', undefined)).toEqual(['default/echo']);
    expect(v.get('default/echo')).toBeUndefined();
  });

  it("keeps remote clusters' nodes (not ours, not one claiming another cluster, not an invalid one) and says when they change", () => {
    const v = new MergedView('east');
    const w1 = { name: 'w1', cluster: 'west', addresses: [{ type: 'InternalIP', ip: '192.168.0.11' }], podCidrs: ['10.2.1.0/24'] };
    expect(put(v, '/skein/v1/cache/west/nodes/w1', w1)).toEqual([]);
    expect(v.nodesVersion).toBe(1);
    put(v, '/skein/v1/cache/west/nodes/w1', w1); // the same value again: no change
    put(v, '/skein/v1/export/east/nodes/e1', { ...w1, name: 'e1', cluster: 'east' }); // ours: never routed
    put(v, '/skein/v1/cache/west/nodes/w2', { ...w1, name: 'w2', cluster: 'north' }); // west writing as north
    v.apply('/skein/v1/cache/west/nodes/w3', '{"name":"w3"}');
    expect(v.nodesVersion).toBe(1);
    expect(v.remoteNodes()).toEqual([w1]);
    v.apply('/skein/v1/cache/west/nodes/w1', undefined);
    expect(v.nodesVersion).toBe(2);
    expect(v.remoteNodes()).toEqual([]);
  });

  it('serves a non-global service locally, and lets the export win while both exist', () => {
    const v = new MergedView('east');
    put(v, '/skein/v1/local/east/services/default/echo', svc('east', { affinity: 'none', shared: false }));
    expect(v.get('default/echo')).toMatchObject({ global: false, clusters: [{ cluster: 'east', local: true }] });
    put(v, '/skein/v1/export/east/services/default/echo', svc('east'));
    expect(v.get('default/echo')).toMatchObject({ global: true, affinity: 'local' });
  });
});
