// The dashboard page served by skein-apiserver at /dashboard/ (through the Kubernetes API's service proxy,
// or `skein dashboard`'s local proxy): every URL here is relative to the page, so it works under any prefix.
// It shows a page of services at a time and re-reads what it shows when the server's event stream says
// something changed (falling back to polling while the stream is down).
import type { AgentDetail, DashboardOverview, FirstData, ServiceDetail, ServicePage } from '../mesh/dashboard.js';
import type { DrillReport } from '../mesh/drill-report.js';
import { fill, h, relative, svg } from './dom.js';
import { drillSummary, renderTimeline } from './timeline.js';
import './style.css';

const PAGE = 50;
const POLL_MS = 2_000;
const DRILLS_EVERY_MS = 10_000;

/** The payloads are checked against mesh/dashboard.ts by the server before they leave; here they are typed only. */
async function get<T>(path: string): Promise<T> {
  const res = await fetch(path, { headers: { accept: 'application/json' } });
  const body: unknown = await res.json();
  if (!res.ok) throw new Error((body as { error?: string }).error ?? `${path}: ${res.status}`);
  return body as T;
}

const state = { q: '', offset: 0, version: -1, drillsAt: 0, drill: 0 };
const el = {
  header: h('header', { id: 'header' }),
  graph: h('section', { id: 'graph' }),
  links: h('section', { id: 'links' }),
  services: h('section', { id: 'services' }),
  detail: h('section', { id: 'detail', hidden: true }),
  agents: h('section', { id: 'agents' }),
  trust: h('section', { id: 'trust' }),
  drills: h('section', { id: 'drills' }),
  live: h('span', { class: 'live off', id: 'live' }, 'connecting'),
};
const search = h('input', { type: 'search', id: 'search', placeholder: 'search services (namespace/name)', 'aria-label': 'search services' });
const rows = h('tbody', { id: 'service-rows' });
const pager = h('div', { class: 'pager' });

const badge = (text: string, cls = '') => h('span', { class: `badge ${cls}` }, text);

function renderHeader(o: DashboardOverview): void {
  fill(
    el.header,
    h('h1', {}, `Skein · ${o.cluster}`),
    h('p', { class: 'muted' }, `cluster id ${o.clusterId} · export `, badge(o.synced ? 'synced' : 'not synced yet', o.synced ? 'ready' : 'not-ready'), ` · ${o.services} global services · ${o.nodes} nodes · ${o.identities} identities · `, el.live),
  );
}

/** This cluster in the middle, each linked remote around it; the edge's class is the link's state. */
function renderGraph(o: DashboardOverview): void {
  const W = 520;
  const H = 220;
  const cx = W / 2;
  const cy = H / 2;
  const n = o.links.length;
  const spots = o.links.map((l, i) => {
    const a = n === 1 ? 0 : -Math.PI / 2 + (2 * Math.PI * i) / n;
    return { l, x: cx + Math.cos(a) * 190, y: cy + Math.sin(a) * 75 };
  });
  const node = (name: string, x: number, y: number, local: boolean) =>
    svg('g', { 'data-cluster': name }, svg('circle', { cx: x, cy: y, r: 34, class: local ? 'local' : '' }), svg('text', { x, y: y + 4 }, name));
  fill(
    el.graph,
    h('h2', {}, 'Clusters and links'),
    svg(
      'svg',
      { class: 'graph', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'clusters and their links' },
      ...spots.map(({ l, x, y }) =>
        svg('g', { 'data-link': l.cluster, 'data-state': l.state }, svg('line', { class: `link ${l.state}`, x1: cx, y1: cy, x2: x, y2: y }), svg('text', { x: (cx + x) / 2, y: (cy + y) / 2 - 6 }, l.state)),
      ),
      node(o.cluster, cx, cy, true),
      ...spots.map(({ l, x, y }) => node(l.cluster, x, y, false)),
    ),
    n ? null : h('p', { class: 'muted' }, 'No remote cluster connected (skein connect).'),
  );
}

function renderLinks(o: DashboardOverview): void {
  fill(
    el.links,
    h('h2', {}, 'Links'),
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ...['remote', 'state', 'heartbeat', 'revision lag', 'services', 'rejected keys', 'quota', 'identity expires', 'last error'].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        ...o.links.map((l) =>
          h(
            'tr',
            { 'data-link-row': l.cluster },
            h('td', {}, `${l.cluster} (${l.id})`),
            h('td', {}, badge(l.state, `state-${l.state}`)),
            h('td', {}, relative(l.lastHeartbeat)),
            h('td', {}, l.revisionLag),
            h('td', {}, l.services),
            h('td', {}, l.rejected),
            h('td', {}, l.quota ? `${l.quota.keys}/${l.quota.maxKeys} keys${l.quota.refusedKeys ? `, ${l.quota.refusedKeys} refused` : ''}` : '-'),
            h('td', {}, relative(l.identityExpires)),
            h('td', {}, l.lastError ?? ''),
          ),
        ),
      ),
    ),
  );
}

function renderServices(p: ServicePage): void {
  fill(
    rows,
    ...p.items.map((s) =>
      h(
        'tr',
        { class: 'clickable', 'data-service': s.name, onclick: () => (location.hash = `service=${s.name}`) },
        h('td', {}, h('a', { href: `#service=${s.name}` }, s.name)),
        h('td', {}, s.affinity),
        h('td', {}, ...s.clusters.map((c) => h('span', { class: 'cluster-count', 'data-cluster': c.cluster }, badge(`${c.cluster} ${c.ready}/${c.backends} ready${c.inUse ? ` · ${c.inUse} in use` : ''}`, c.inUse ? 'in-use' : c.ready ? '' : 'not-ready'), ' '))),
      ),
    ),
  );
  const last = Math.min(p.total, p.offset + p.items.length);
  fill(
    pager,
    h('button', { type: 'button', id: 'prev', disabled: p.offset === 0, onclick: () => void turn(-PAGE) }, '‹ previous'),
    h('span', { id: 'range' }, p.total ? `${p.offset + 1}–${last} of ${p.total}` : 'no services match'),
    h('button', { type: 'button', id: 'next', disabled: last >= p.total, onclick: () => void turn(PAGE) }, 'next ›'),
  );
}

function renderDetail(d: ServiceDetail | undefined, name: string): void {
  el.detail.hidden = false;
  if (!d) return fill(el.detail, h('h2', {}, name), h('p', { class: 'muted' }, 'No such global service here.'));
  fill(
    el.detail,
    h('h2', {}, `Service ${d.name}`),
    h('p', { class: 'muted' }, `affinity ${d.affinity} · ${d.shared ? 'shared' : 'not shared'} · ClusterIP ${d.clusterIps.join(', ') || '-'} · ports ${d.ports.join(', ')}`),
    h(
      'table',
      { id: 'backends' },
      h('thead', {}, h('tr', {}, ...['cluster', 'backend', 'node', 'ready', 'in use by'].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        ...d.clusters.flatMap((c) =>
          c.backends.map((b) =>
            h(
              'tr',
              { 'data-backend': b.ip, 'data-backend-cluster': c.cluster, 'data-in-use': String(b.usedBy.length > 0) },
              h('td', {}, c.cluster),
              h('td', {}, `${b.ip} (${b.ports.join(', ')})`),
              h('td', {}, b.node ?? '-'),
              h('td', {}, badge(b.terminating ? 'terminating' : b.ready ? 'ready' : 'not ready', b.ready ? 'ready' : 'not-ready')),
              h('td', {}, b.usedBy.length ? badge(b.usedBy.join(', '), 'in-use') : '-'),
            ),
          ),
        ),
      ),
    ),
    d.clusters.every((c) => c.backends.length === 0) ? h('p', { class: 'muted' }, 'No backends in any cluster.') : null,
  );
}

function renderAgents(o: DashboardOverview, detail?: AgentDetail): void {
  fill(
    el.agents,
    h('h2', {}, 'Node agents'),
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ...['node', 'frontends', 'backend slots', 'failing', 'ejected', 'published'].map((t) => h('th', {}, t)))),
      h(
        'tbody',
        {},
        ...o.agents.map((a) =>
          h(
            'tr',
            { class: 'clickable', 'data-agent': a.node, onclick: () => (location.hash = `node=${a.node}`) },
            h('td', {}, h('a', { href: `#node=${a.node}` }, a.node)),
            h('td', {}, a.frontends),
            h('td', {}, a.backends),
            h('td', {}, a.failures ? badge(String(a.failures), 'not-ready') : '0'),
            h('td', {}, a.ejected ? badge(String(a.ejected), 'state-stale') : '0'),
            h('td', {}, relative(a.at)),
          ),
        ),
      ),
    ),
    detail
      ? h(
          'div',
          { id: 'agent-detail' },
          h('h2', {}, `Frontends of ${detail.node}${detail.truncated ? ' (first ones only)' : ''}`),
          h('table', {}, h('tbody', {}, ...detail.frontends.map((f) => h('tr', {}, h('td', {}, f.frontend), h('td', {}, f.service ?? ''), h('td', {}, f.backends.join(', ') || '-'))))),
          ...detail.failing.map((f) => h('p', { class: 'not-ready' }, `${f.frontend}: ${f.reason}: ${f.error}`)),
          ...detail.ejected.map((e) => h('p', { class: 'state-stale' }, `ejected ${e.backend} until ${e.until}`)),
        )
      : null,
  );
}

function renderTrust(o: DashboardOverview): void {
  fill(
    el.trust,
    h('h2', {}, 'Identity and trust'),
    h('p', {}, `trust domain ${o.trustDomain ?? '-'} · this apiserver's mesh identity expires ${relative(o.meshIdentityExpires)}`),
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ...['trust domain', 'cluster', 'kind', 'CA expires'].map((t) => h('th', {}, t)))),
      h('tbody', {}, ...o.bundles.map((b) => h('tr', { 'data-bundle': b.trustDomain }, h('td', {}, b.trustDomain), h('td', {}, b.cluster), h('td', {}, b.own ? 'own' : 'federated'), h('td', {}, b.notAfter ? `${b.notAfter} (${relative(b.notAfter)})` : '-')))),
    ),
  );
}

function renderDrills(drills: DrillReport[]): void {
  if (!drills.length) return fill(el.drills, h('h2', {}, 'Drills'), h('p', { class: 'muted' }, 'No drill kept yet (skein drill keeps the last ones here).'));
  state.drill = Math.min(state.drill, drills.length - 1);
  const chosen = drills[state.drill]!;
  const select = h(
    'select',
    { id: 'drill-select', onchange: (e) => ((state.drill = Number((e.target as HTMLSelectElement).value)), renderDrills(drills)) },
    ...drills.map((d, i) => {
      const o = h('option', { value: i }, `${new Date(d.timeline.start).toISOString()} · ${d.service} · ${d.fault} ${d.target} · failover ${d.failoverMs ?? '-'} ms`);
      o.selected = i === state.drill;
      return o;
    }),
  );
  const chart = h('div', { id: 'drill-chart' });
  fill(el.drills, h('h2', {}, 'Drills'), select, drillSummary(chosen), chart);
  renderTimeline(chart, chosen);
}

async function turn(by: number): Promise<void> {
  state.offset = Math.max(0, state.offset + by);
  await refresh();
}

const selected = () => {
  const m = /^#(service|node)=(.+)$/.exec(location.hash);
  return m ? { kind: m[1] as 'service' | 'node', name: decodeURIComponent(m[2]!) } : undefined;
};

let running: Promise<void> | undefined;
let again = false;

/**
 * Re-reads what is on screen; calls during a refresh coalesce into one more after it. `first`: the data the
 * page came with (the server inlines the overview and the first page), drawn without a round trip.
 */
function refresh(first?: FirstData): Promise<void> {
  if (running) {
    again = true;
    return running;
  }
  running = (async () => {
    try {
      const sel = selected();
      const query = `api/services?offset=${state.offset}&limit=${PAGE}&q=${encodeURIComponent(state.q)}`;
      const inline = first && first.page.offset === state.offset && first.page.limit === PAGE && first.page.q === state.q ? first : undefined;
      const [o, p, d, a] = await Promise.all([
        inline?.overview ?? get<DashboardOverview>('api/overview'),
        inline?.page ?? get<ServicePage>(query),
        sel?.kind === 'service' ? get<ServiceDetail>(`api/services/${sel.name.split('/').map(encodeURIComponent).join('/')}`).catch(() => undefined) : undefined,
        sel?.kind === 'node' ? get<AgentDetail>(`api/agents/${encodeURIComponent(sel.name)}`).catch(() => undefined) : undefined,
      ]);
      state.version = o.version;
      renderHeader(o);
      renderGraph(o);
      renderLinks(o);
      renderServices(p);
      // For the benchmark: when the first rows were drawn, on the page's own clock.
      if (!performance.getEntriesByName('first-rows').length) performance.mark('first-rows');
      if (sel?.kind === 'service') renderDetail(d, sel.name);
      else el.detail.hidden = true;
      renderAgents(o, a);
      renderTrust(o);
      document.body.dataset.version = String(o.version);
      if (Date.now() - state.drillsAt > DRILLS_EVERY_MS) {
        state.drillsAt = Date.now();
        renderDrills(await get<DrillReport[]>('api/drills').catch(() => []));
      }
    } catch (err) {
      fill(el.live, `error: ${(err as Error).message}`);
    } finally {
      running = undefined;
      if (again) {
        again = false;
        void refresh();
      }
    }
  })();
  return running;
}

function follow(): void {
  let poll: number | undefined;
  const events = new EventSource('api/events');
  events.addEventListener('open', () => {
    el.live.className = 'live on';
    el.live.textContent = 'live';
    clearInterval(poll);
    poll = undefined;
  });
  events.addEventListener('change', (e) => {
    const { version } = JSON.parse((e as MessageEvent<string>).data) as { version: number };
    if (version !== state.version) void refresh();
  });
  events.addEventListener('error', () => {
    el.live.className = 'live off';
    el.live.textContent = 'reconnecting (polling)';
    poll ??= window.setInterval(() => void refresh(), POLL_MS);
  });
}

function main(): void {
  let typing: number | undefined;
  search.addEventListener('input', () => {
    clearTimeout(typing);
    typing = window.setTimeout(() => {
      state.q = search.value.trim();
      state.offset = 0;
      void refresh();
    }, 150);
  });
  fill(
    el.services,
    h('h2', {}, 'Global services'),
    search,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'service'), h('th', {}, 'affinity'), h('th', {}, 'backends per cluster (ready / in use by this cluster\'s nodes)'))), rows),
    pager,
  );
  document.getElementById('app')!.replaceChildren(el.header, h('div', { class: 'grid' }, el.graph, el.links), el.services, el.detail, el.agents, el.trust, el.drills);
  window.addEventListener('hashchange', () => void refresh());
  const inline = document.getElementById('first-data')?.textContent;
  void refresh(inline ? (JSON.parse(inline) as FirstData) : undefined);
  follow();
}

main();
