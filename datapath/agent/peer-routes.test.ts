import { describe, expect, it } from 'vitest';
import type { MeshNode } from '../../mesh/schema/values.js';
import type { RouteTable } from '../kernel-routes.js';
import { FakeRouteTable } from '../test-fakes.js';
import { PeerRoutes, wantedRoutes } from './peer-routes.js';

const node = (cluster: string, name: string, ip: string, ...podCidrs: string[]): MeshNode => ({ name, cluster, addresses: [{ type: 'Hostname', ip: '192.168.9.9' }, { type: 'InternalIP', ip }], podCidrs });
const log = { info: () => {}, warn: () => {} };
const table = (t: FakeRouteTable) => Object.fromEntries([...t.routes].map(([k, r]) => [k, r.via]));

describe('routes to remote nodes\' pods', () => {
  it('routes each pod CIDR via its node\'s InternalIP, moves it when the node moves, removes it when the node goes', () => {
    const t = new FakeRouteTable();
    const routes = new PeerRoutes({ table: t, log });
    expect(routes.sync([node('west', 'w1', '192.168.0.11', '10.2.1.0/24'), node('west', 'w2', '192.168.0.12', '10.2.2.0/24')])).toEqual([]);
    expect(table(t)).toEqual({ '10.2.1.0/24': '192.168.0.11', '10.2.2.0/24': '192.168.0.12' });
    routes.sync([node('west', 'w1', '192.168.0.21', '10.2.1.0/24')]);
    expect(table(t)).toEqual({ '10.2.1.0/24': '192.168.0.21' });
    // The operator's route to the same prefix is not Skein's: never listed, never removed.
    expect(t.foreign.get('10.2.1.0/24')).toBe('192.168.0.99');
    routes.sync([]);
    expect(table(t)).toEqual({});
  });

  it('adopts what an earlier agent installed: nothing is rewritten that is already right', () => {
    const t = new FakeRouteTable();
    t.routes.set('10.2.1.0/24', { dst: '10.2.1.0', prefixLen: 24, via: '192.168.0.11' });
    t.routes.set('10.3.0.0/24', { dst: '10.3.0.0', prefixLen: 24, via: '192.168.0.31' });
    let replaced = 0;
    const counting: RouteTable = { list: t.list, replace: (...a) => (replaced++, t.replace(...a)), remove: (...a) => t.remove(...a) };
    new PeerRoutes({ table: counting, log }).sync([node('west', 'w1', '192.168.0.11', '10.2.1.0/24')]);
    expect(replaced).toBe(0);
    expect(table(t)).toEqual({ '10.2.1.0/24': '192.168.0.11' });
  });

  it('reports a gateway the kernel refuses and installs it once it is reachable; others are not held up', () => {
    const t = new FakeRouteTable();
    t.unreachable.add('172.31.0.5');
    const routes = new PeerRoutes({ table: t, log });
    const nodes = [node('west', 'w1', '172.31.0.5', '10.2.1.0/24'), node('west', 'w2', '192.168.0.12', '10.2.2.0/24')];
    expect(routes.sync(nodes)).toEqual(['10.2.1.0/24']);
    expect(table(t)).toEqual({ '10.2.2.0/24': '192.168.0.12' });
    t.unreachable.clear();
    expect(routes.sync(nodes)).toEqual([]);
    expect(table(t)).toEqual({ '10.2.1.0/24': '172.31.0.5', '10.2.2.0/24': '192.168.0.12' });
  });

  it('gives a CIDR two nodes claim to the first by cluster and name, whatever order they came in', () => {
    const a = node('east', 'e9', '192.168.0.9', '10.4.0.0/24');
    const b = node('west', 'w1', '192.168.0.11', '10.4.0.0/24');
    expect(wantedRoutes([b, a]).get('10.4.0.0/24')).toMatchObject({ via: '192.168.0.9', node: 'east/e9' });
    expect(wantedRoutes([a, b]).get('10.4.0.0/24')).toMatchObject({ via: '192.168.0.9' });
  });

  it('removes every route it made when peer routes are turned off', () => {
    const t = new FakeRouteTable();
    const routes = new PeerRoutes({ table: t, log });
    routes.sync([node('west', 'w1', '192.168.0.11', '10.2.1.0/24', '10.2.9.0/24')]);
    expect(routes.removeAll()).toBe(2);
    expect(table(t)).toEqual({});
  });
});
