import Fastify, { type FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { ServiceDetail, ServicePage, DashboardOverview, AgentDetail, FirstData } from '../../mesh/dashboard.js';
import { DRILL_HISTORY, type DrillReport } from '../../mesh/drill-report.js';
import { KubeApiError } from '../../mesh/kube/rest.js';
import { cachePrefix, keys } from '../../mesh/schema/keys.js';
import type { AgentView, GlobalService } from '../../mesh/schema/values.js';
import { AGENT_VIEW_SHARDS, agentShardOf, agentShards } from '../../mesh/agent-view.js';
import type { RemoteStatus } from '../../mesh/status.js';
import { Catalog } from './catalog.js';
import { DrillHistoryReader } from './drills.js';
import { registerDashboard } from './routes.js';
import type { StatusCore } from './views.js';

const svc = (cluster: string, name: string, backends: Array<{ ip: string; ready?: boolean }>, clusterIp = '100.64.0.10'): GlobalService => ({
  cluster,
  namespace: 'default',
  name,
  shared: true,
  affinity: 'local',
  clusterIps: [clusterIp],
  ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  backends: backends.map((b) => ({ ip: b.ip, ports: { http: { port: 8080, protocol: 'TCP' } }, ready: b.ready ?? true, serving: true, terminating: false })),
});
const agent = (node: string, programmed: Record<string, string[]>): AgentView => ({ node, at: new Date().toISOString(), frontends: Object.keys(programmed).length, backends: 1, reconciles: 1, lastReconcileMs: 1, programmed, truncated: false });

const remote = (over: Partial<RemoteStatus> = {}): RemoteStatus => ({
  cluster: 'west', id: 2, endpoint: 'https://10.0.0.2:2379', connected: true, synced: true, stale: false, revision: 10, revisionLag: 0,
  services: 1, identities: 1, nodes: 1, ips: 1, rejected: 0, rejectedByReason: {}, pinnedPodCidrs: [], relists: 0, rotations: 0, ...over,
});
const status = (remotes: RemoteStatus[]): StatusCore => ({
  cluster: 'east', clusterId: 1, synced: true, podCidrs: [], services: [], identities: 0, ips: 0, nodes: 2,
  etcd: { backlog: 0, writes: 0 }, watchRestarts: 0, rssBytes: 0, meshEndpoint: 'https://10.0.0.1:2379', remotes,
});

let app: FastifyInstance;
let catalog: Catalog;
let remotes: RemoteStatus[];

async function serve(drillsText?: string | Error): Promise<void> {
  catalog = new Catalog({ etcd: () => { throw new Error('not used: values are applied directly'); }, cluster: 'east', log: pino({ level: 'silent' }) });
  remotes = [remote()];
  const rest = {
    get: async <T>(): Promise<T> => {
      if (drillsText instanceof Error) throw drillsText;
      if (drillsText === undefined) throw new KubeApiError(404, 'NotFound', 'configmaps "skein-drills" not found');
      return { data: { [DRILL_HISTORY.key]: drillsText } } as T;
    },
  };
  app = Fastify();
  registerDashboard(app, { catalog, status: () => status(remotes), drills: new DrillHistoryReader(rest) });
  await app.ready();
}
const put = (key: string, value: unknown) => catalog.apply(key, JSON.stringify(value));
const get = async (url: string) => {
  const res = await app.inject({ method: 'GET', url });
  return { status: res.statusCode, body: res.json<Record<string, unknown>>(), res };
};

afterEach(async () => {
  await app?.close();
  await catalog?.stop();
});

describe('dashboard API: services', () => {
  it('pages and searches 10,000 services server-side, sorted by name', async () => {
    await serve();
    for (let i = 0; i < 10_000; i++) put(keys.service('east', 'default', `svc-${String(i).padStart(5, '0')}`), svc('east', `svc-${String(i).padStart(5, '0')}`, [{ ip: '10.1.0.1' }]));
    const first = ServicePage.parse((await get('/dashboard/api/services?limit=20')).body);
    expect(first.total).toBe(10_000);
    expect(first.items.map((x) => x.name)).toEqual(Array.from({ length: 20 }, (_, i) => `default/svc-${String(i).padStart(5, '0')}`));
    const later = ServicePage.parse((await get('/dashboard/api/services?offset=9990&limit=50')).body);
    expect(later.items.map((x) => x.name)).toEqual(Array.from({ length: 10 }, (_, i) => `default/svc-0${9990 + i}`));
    const found = ServicePage.parse((await get('/dashboard/api/services?q=SVC-0424')).body);
    expect(found.total).toBe(10);
    expect(found.items[0]!.name).toBe('default/svc-04240');
    expect(ServicePage.parse((await get('/dashboard/api/services?q=nothing-like-it')).body)).toMatchObject({ total: 0, items: [] });
  });

  it('refuses bad query parameters with a 400 naming the parameter', async () => {
    await serve();
    for (const [query, says] of [
      ['limit=0', 'query parameter limit: must be 1 to 200'],
      ['limit=201', 'query parameter limit: must be 1 to 200'],
      ['limit=ten', 'query parameter limit: expected a page size from 1 to 200'],
      ['offset=-1', 'query parameter offset: must be 0 or more'],
      ['offset=1.5', 'query parameter offset: expected a whole number'],
      [`q=${'x'.repeat(201)}`, 'query parameter q: a search of at most 200 characters'],
      ['page=2', 'unknown query parameter page: use offset, limit, q'],
    ] as const) {
      const r = await get(`/dashboard/api/services?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.body.error, query).toContain(says);
    }
  });

  it('shows each cluster\'s backends with readiness, and which ones the node agents use now', async () => {
    await serve();
    put(keys.service('east', 'default', 'echo'), svc('east', 'echo', [{ ip: '10.1.0.5', ready: false }]));
    put(`${cachePrefix('west')}services/default/echo`, svc('west', 'echo', [{ ip: '10.2.0.5' }, { ip: '10.2.0.6' }], '100.64.9.9'));
    put(keys.agent('east', 'east-node-0'), agent('east-node-0', { 'TCP/100.64.0.10:80': ['10.2.0.5:8080'] }));
    put(keys.agent('east', 'east-node-1'), agent('east-node-1', { 'TCP/100.64.0.10:80': ['10.2.0.5:8080', '10.2.0.6:8080'], 'TCP/100.64.1.1:53': ['10.1.0.9:53'] }));

    const row = ServicePage.parse((await get('/dashboard/api/services')).body).items[0]!;
    expect(row.clusters).toEqual([
      { cluster: 'east', backends: 1, ready: 0, inUse: 0 },
      { cluster: 'west', backends: 2, ready: 2, inUse: 2 },
    ]);
    const detail = ServiceDetail.parse((await get('/dashboard/api/services/default/echo')).body);
    expect(detail.clusterIps).toEqual(['100.64.0.10']); // the local export's settings rule
    expect(detail.clusters.find((c) => c.cluster === 'west')!.backends.map((b) => [b.ip, b.usedBy])).toEqual([
      ['10.2.0.5', ['east-node-0', 'east-node-1']],
      ['10.2.0.6', ['east-node-1']],
    ]);
    expect(detail.nodes.find((n) => n.node === 'east-node-1')!.frontends).toEqual({ 'TCP/100.64.0.10:80': ['10.2.0.5:8080', '10.2.0.6:8080'] });
    const node = AgentDetail.parse((await get('/dashboard/api/agents/east-node-1')).body);
    expect(node.frontends).toEqual([
      { frontend: 'TCP/100.64.0.10:80', service: 'default/echo', backends: ['10.2.0.5:8080', '10.2.0.6:8080'] },
      { frontend: 'TCP/100.64.1.1:53', backends: ['10.1.0.9:53'] },
    ]);

    // The remote withdraws its export: the service stays with its local backends.
    catalog.apply(`${cachePrefix('west')}services/default/echo`, undefined);
    expect(ServicePage.parse((await get('/dashboard/api/services')).body).items[0]!.clusters.map((c) => c.cluster)).toEqual(['east']);
  });

  it("shows a node's use of every one of 10,000 services from its view's shards, and forgets a shard that goes", async () => {
    await serve();
    const name = (i: number) => `svc-${String(i).padStart(5, '0')}`;
    const vip = (i: number) => `100.66.${i >> 8}.${i & 255}`;
    for (let i = 0; i < 10_000; i++) put(keys.service('east', 'default', name(i)), svc('east', name(i), [{ ip: '10.1.0.1' }], vip(i)));
    const shards = agentShards('east-node-0', Array.from({ length: 10_000 }, (_, i) => [`TCP/${vip(i)}:80`, ['10.1.0.1:8080']] as const));
    for (const [i, shard] of shards) put(keys.agentFrontends('east', 'east-node-0', i), shard);
    put(keys.agent('east', 'east-node-0'), { ...agent('east-node-0', {}), frontends: 10_000, shards: AGENT_VIEW_SHARDS });

    const last = ServicePage.parse((await get('/dashboard/api/services?offset=9950&limit=50')).body);
    expect(last.items.map((r) => r.clusters[0]!.inUse)).toEqual(new Array(50).fill(1));
    const detail = ServiceDetail.parse((await get(`/dashboard/api/services/default/${name(9_999)}`)).body);
    expect(detail.clusters[0]!.backends[0]!.usedBy).toEqual(['east-node-0']);
    // The node's own page lists the first of its frontends, and says there are more.
    const node = AgentDetail.parse((await get('/dashboard/api/agents/east-node-0')).body);
    expect(node.frontends).toHaveLength(500);
    expect(node.truncated).toBe(true);

    // One shard deleted (its key gone from the etcd): exactly its services lose the mark.
    const lost = agentShardOf(`TCP/${vip(9_999)}:80`);
    catalog.apply(keys.agentFrontends('east', 'east-node-0', lost), undefined);
    const after = ServicePage.parse((await get('/dashboard/api/services?offset=9950&limit=50')).body);
    expect(after.items.map((r) => r.clusters[0]!.inUse)).toEqual(Array.from({ length: 50 }, (_, j) => (agentShardOf(`TCP/${vip(9_950 + j)}:80`) === lost ? 0 : 1)));
  });

  it('answers 404 for an unknown service or node, and ignores values that do not match their key', async () => {
    await serve();
    put(keys.service('east', 'default', 'echo'), svc('east', 'other', [])); // names another service
    expect((await get('/dashboard/api/services/default/echo')).status).toBe(404);
    expect((await get('/dashboard/api/services')).body.total).toBe(0);
    expect((await get('/dashboard/api/agents/nowhere')).body.error).toContain('no agent view from node nowhere');
  });
});

describe('dashboard API: overview, live stream, drills, UI', () => {
  it('shows the links with their state and no secret: bundles by their expiry only', async () => {
    await serve();
    remotes = [remote(), remote({ cluster: 'north', id: 3, stale: true, revisionLag: 7, identityExpires: '2030-01-01T00:00:00.000Z' }), remote({ cluster: 'south', id: 4, quota: { keys: 9, bytes: 1, maxKeys: 9, maxBytes: 9, maxValueBytes: 9, overQuota: true, refusedKeys: 3 } })];
    const o = DashboardOverview.parse((await get('/dashboard/api/overview')).body);
    expect(o.links.map((l) => [l.cluster, l.state, l.revisionLag])).toEqual([['west', 'synced', 0], ['north', 'stale', 7], ['south', 'over-quota', 0]]);
    expect(o.links[1]!.identityExpires).toBe('2030-01-01T00:00:00.000Z');
    const text = JSON.stringify(o);
    expect(text).not.toMatch(/BEGIN|PRIVATE|endpoint/);
  });

  it('streams a change event when a service changes or a link changes state', async () => {
    await serve();
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const ac = new AbortController();
    const res = await fetch(`http://127.0.0.1:${port}/dashboard/api/events`, { signal: ac.signal });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const reader = res.body!.getReader();
    const next = async () => new TextDecoder().decode((await reader.read()).value as Uint8Array);
    const initial = Number(/"version":(\d+)/.exec(await next())![1]);
    put(keys.service('east', 'default', 'echo'), svc('east', 'echo', []));
    expect(Number(/"version":(\d+)/.exec(await next())![1])).toBeGreaterThan(initial);
    remotes = [remote({ stale: true })];
    expect(await next()).toContain('event: change');
    ac.abort();
  });

  it('lists the kept drills newest first, and none when nothing was kept', async () => {
    await serve();
    expect((await app.inject('/dashboard/api/drills')).json()).toEqual([]);
    await app.close();
    const drill = { service: 'default/echo', cluster: 'east', affinity: 'local', fault: 'scale', target: 'local', faulted: { cluster: 'east', pods: [] }, address: '1.2.3.4:80', protocol: 'http', intervalMs: 20, requests: 1, requestsLost: 0, failoverMs: 1, failbackMs: 1, lossWindowMs: null, lossWindow: null, ejectedAfterMs: null, ejectedFrom: null, faultedStayedReady: null, lostErrors: {}, timeline: { start: 1, takenAt: 1, faultAt: 1, lostAt: null, restoredAt: 1, readyAt: 1, end: 1 }, phases: [] } satisfies DrillReport;
    await serve(JSON.stringify([drill]));
    expect((await app.inject('/dashboard/api/drills')).json()).toEqual([drill]);
    await app.close();
    await serve(new KubeApiError(403, 'Forbidden', 'configmaps is forbidden'));
    const refused = await app.inject('/dashboard/api/drills');
    expect(refused.statusCode).toBe(502);
    expect(refused.json<{ error: string }>().error).toContain('cannot read the drill history (ConfigMap skein-system/skein-drills): configmaps is forbidden');
  });

  it('serves the page with its first data inline, relative URLs and a CSP that runs its own script alone', async () => {
    await serve();
    put(keys.service('east', 'default', 'echo'), svc('east', 'echo', [{ ip: '10.1.0.5' }]));
    // A remote's error text (free text from elsewhere) that tries to close the data block: it must stay data.
    const hostile = '</script><script>alert(1)</script><!--';
    remotes = [remote({ lastError: hostile })];
    const res = await app.inject('/dashboard/');
    const policy = res.headers['content-security-policy'] as string;
    expect(policy).toContain("default-src 'none'");
    expect(policy).not.toContain("'unsafe-inline' 'self'");
    const scripts = [...res.body.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.map((m) => m[1])).toEqual([' type="application/json" id="first-data"', '']); // the data block, then the bundle
    const hash = `'sha256-${createHash('sha256').update(scripts[1]![2]!).digest('base64')}'`;
    expect(policy).toMatch(new RegExp(`script-src ${hash.replace(/[+/]/g, '\\$&')};`));
    const first = FirstData.parse(JSON.parse(scripts[0]![2]!));
    expect(first.page).toMatchObject({ offset: 0, limit: 50, q: '', total: 1 });
    expect(first.page.items.map((r) => r.name)).toEqual(['default/echo']);
    expect(first.overview).toMatchObject({ cluster: 'east', services: 1 });
    expect(first.overview.links[0]!.lastError).toBe(hostile);
    expect(res.body).not.toMatch(/(src|href)="/);
    expect((await app.inject('/dashboard')).headers.location).toBe('dashboard/');
    expect((await app.inject('/dashboard/..%2fmain.js')).statusCode).toBe(404);
    expect((await app.inject('/dashboard/app.js')).statusCode).toBe(404);
  });
});
