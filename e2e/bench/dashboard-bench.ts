// Issue 16's benchmark: the dashboard with 10,000 global services, in Debian's headless Chromium, reached
// as users reach it (`skein dashboard`'s local proxy → the Kubernetes API's service proxy → skein-apiserver).
// (1) first render: navigation to the first page of services drawn (a fresh page each time: bundle parse,
// overview, a page of 50 rows); (2) a live update: a service's value written to the mesh etcd → its row in
// the browser shows it (catalog watch, event stream through both proxies, the page re-reads and redraws).
import { keys } from '../../mesh/schema/keys.js';
import { encodeValue, GlobalService } from '../../mesh/schema/values.js';
import { startDashboardProxy } from '../../deploy/cli/dashboard.js';
import { kubeconfigFor } from '../../deploy/cli/status.js';
import { statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { waitFor } from '../../testbed/daemon.js';
import { clusterRest, meshEtcd, tempStateDir } from '../tests/helpers.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { launchChromium } from '../tests/browser.js';
import { distribution, type Result } from './report.js';

const C = 'bench-dash';
const BACKENDS = 3;

const name = (i: number) => `svc-${String(i).padStart(5, '0')}`;

function service(i: number, ready: number): GlobalService {
  return {
    cluster: C,
    namespace: 'bulk',
    name: name(i),
    shared: true,
    affinity: 'local',
    clusterIps: [`100.66.${Math.floor(i / 250)}.${(i % 250) + 1}`],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    backends: Array.from({ length: BACKENDS }, (_, b) => ({ ip: `10.44.${Math.floor(i / 80)}.${(i % 80) * 3 + b + 1}`, ports: { http: { port: 8080, protocol: 'TCP' as const } }, ready: b < ready, serving: b < ready, terminating: false })),
  };
}

export async function dashboardBench(opts: { services: number; renders: number; updates: number }): Promise<Result[]> {
  const stateDir = tempStateDir('bench-dashboard');
  const etcdClients: { close(): void }[] = [];
  let proxy: { close(): void; closeAllConnections(): void } | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  try {
    await up({ stateDir, clusters: [{ name: C, id: 46 }], nodes: 1, echo: false });
    const etcd = meshEtcd(stateDir, C);
    etcdClients.push(etcd);
    // Straight into the export (the exporter only prunes at its start): the dashboard is what is measured.
    for (let i = 0; i < opts.services; i += 128) {
      const ops = Array.from({ length: Math.min(128, opts.services - i) }, (_, j) => etcd.put(keys.service(C, 'bulk', name(i + j))).value(encodeValue(GlobalService, service(i + j, BACKENDS))));
      await etcd.if(keys.config(C), 'Version', '>', -1).then(...ops).commit();
    }
    const started = await startDashboardProxy(kubeconfigFor({ kubeconfig: statePaths(stateDir).kubeconfig, context: `skein-${C}` }), 0);
    proxy = started.server;
    const total = `of ${opts.services}`;
    // The apiserver's catalog has every service once a page says so.
    await waitFor(`the dashboard to list ${opts.services} services`, async () => {
      const res = await fetch(`${started.url}api/services?limit=1`);
      return res.ok && ((await res.json()) as { total: number }).total === opts.services ? true : undefined;
    }, 120_000);

    // The node's agent publishes every frontend it programs (sharded view): the last page's services, far past
    // the first 500, show as in use by it once it has programmed all of them.
    const lastPage = `api/services?offset=${Math.max(0, opts.services - 50)}&limit=50`;
    const inUseOnLastPage = await waitFor('the node agent to publish its use of the last page of services', async () => {
      const p = (await (await fetch(`${started.url}${lastPage}`)).json()) as { items: { clusters: { inUse: number }[] }[] };
      const n = p.items.filter((r) => r.clusters.some((c) => c.inUse > 0)).length;
      return n === p.items.length ? n : undefined;
    }, 120_000);

    // Where a first render's time goes: the first page's JSON through both proxies alone (no browser).
    const apiPage: number[] = [];
    for (let n = 0; n < 20; n++) {
      const t0 = performance.now();
      await (await fetch(`${started.url}api/services?offset=0&limit=50&q=`)).arrayBuffer();
      apiPage.push(performance.now() - t0);
    }

    browser = await launchChromium();
    // The measuring predicates are strings evaluated per animation frame: the page's CSP forbids eval, so the
    // measuring context bypasses it (the page itself runs unchanged).
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, bypassCSP: true });
    const renders: number[] = [];
    const phases = new Map<string, number[]>();
    for (let n = 0; n < opts.renders; n++) {
      const page = await context.newPage();
      const t0 = performance.now();
      await page.goto(started.url);
      await page.waitForFunction(`document.querySelectorAll('#service-rows tr').length === 50 && document.getElementById('range').textContent.includes(${JSON.stringify(total)})`, undefined, { timeout: 60_000, polling: 'raf' });
      renders.push(performance.now() - t0);
      // The page's own clock (from navigation start): when each response ended, and when the rows were there.
      const marks = await page.evaluate<Record<string, number>>(`(() => {
        const rows = performance.getEntriesByName('first-rows')[0];
        const out = { html: performance.getEntriesByType('navigation')[0].responseEnd, ...(rows ? { 'rows drawn': rows.startTime } : {}), seen: performance.now() };
        for (const e of performance.getEntriesByType('resource')) {
          const k = ['app.js', 'api/services', 'api/overview'].find((x) => e.name.includes(x));
          if (k && !(k in out)) { out[k + ' start'] = e.startTime; out[k] = e.responseEnd; }
        }
        return out;
      })()`);
      for (const [k, v] of Object.entries(marks)) (phases.get(k) ?? phases.set(k, []).get(k)!).push(v);
      await page.close();
    }

    const page = await context.newPage();
    await page.goto(started.url);
    await page.waitForSelector('#live.on', { timeout: 60_000 });
    await page.waitForSelector(`tr[data-service="bulk/${name(0)}"]`, { timeout: 60_000 });
    const updates: number[] = [];
    for (let n = 0; n < opts.updates; n++) {
      const ready = n % 2 === 0 ? 1 : BACKENDS;
      const t0 = performance.now();
      await etcd.put(keys.service(C, 'bulk', name(0))).value(encodeValue(GlobalService, service(0, ready)));
      await page.waitForFunction(`document.querySelector('tr[data-service="bulk/${name(0)}"]')?.textContent.includes('${C} ${ready}/${BACKENDS} ready')`, undefined, { timeout: 30_000, polling: 'raf' });
      updates.push(performance.now() - t0);
    }
    const heap = await page.evaluate<number>('performance.memory ? performance.memory.usedJSHeapSize : 0');
    const status = await clusterRest(stateDir, C).get<ApiserverStatus>(skeinProxyPath('/v1/status'));
    return [
      distribution(`dashboard first render, ${opts.services} services (navigation -> first page drawn)`, 'ms', renders, 'headless Chromium; skein dashboard proxy -> Kubernetes service proxy -> skein-apiserver'),
      distribution(`dashboard live update, ${opts.services} services (mesh etcd write -> row redrawn)`, 'ms', updates, 'catalog watch -> SSE through both proxies -> page re-reads overview + page'),
      distribution('dashboard first page of services (JSON) through both proxies, no browser', 'ms', apiPage, 'Node fetch -> skein dashboard proxy -> Kubernetes service proxy -> skein-apiserver'),
      ...[...phases].map(([k, v]) => distribution(`dashboard first render: ${k} (ms after navigation start)`, 'ms', v, "the page's own clock")),
      { name: `services of the last page (of ${opts.services}) shown in use by the node`, unit: 'of 50', value: inUseOnLastPage },
      { name: 'dashboard page JS heap after the updates', unit: 'MiB', value: Math.round((heap / 1048576) * 10) / 10 },
      { name: `skein-apiserver RSS with ${opts.services} services in the dashboard's catalog`, unit: 'MiB', value: Math.round(status.rssBytes / 1048576) },
    ];
  } finally {
    await browser?.close();
    proxy?.closeAllConnections();
    proxy?.close();
    for (const c of etcdClients) c.close();
    await down(stateDir);
  }
}
