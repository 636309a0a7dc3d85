// Issue 16: the dashboard in a real browser (Debian's headless Chromium through playwright-core), reached as
// users reach it: `skein dashboard` proxying through the Kubernetes API's service proxy to skein-apiserver.
// Two connected clusters: the page shows both and the link's state; east's echo scaled to zero shows west's
// backends in use by east's nodes; a drill's --html report renders its timeline, and the dashboard shows the
// drill it kept.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../deploy/cli/connect.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { distPath } from '../../testbed/repo.js';
import { statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { artifactPath, launchChromium } from './browser.js';
import { clusterKubeconfig, clusterRest, meshEtcd, readyPods, scale, tempStateDir } from './helpers.js';
import { keys } from '../../mesh/schema/keys.js';
import { AgentView, encodeValue, GlobalService } from '../../mesh/schema/values.js';

const EAST = 'db-east';
const WEST = 'db-west';
const stateDir = tempStateDir('dashboard');
const WAIT = { timeout: 60_000 };
let east: KubeRest;
let browser: Browser;
let page: Page;
let proxy: ChildProcess | undefined;
let url = '';

const skein = (args: string[]) => spawn(process.execPath, [distPath('deploy', 'cli', 'skein.js'), ...args, '--kubeconfig', statePaths(stateDir).kubeconfig], { stdio: ['ignore', 'pipe', 'pipe'] });

/** `skein dashboard` as users run it; resolves with the URL it prints. */
async function startDashboard(): Promise<string> {
  proxy = skein(['dashboard', '--context', `skein-${EAST}`, '--port', '0', '--no-open']);
  let stderr = '';
  proxy.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const lines = createInterface({ input: proxy.stdout! });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`skein dashboard printed no URL in 20 s: ${stderr}`)), 20_000);
    lines.on('line', (line) => {
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proxy!.on('exit', (code) => reject(new Error(`skein dashboard exited ${code}: ${stderr}`)));
  });
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 71 }, { name: WEST, id: 72 }], nodes: 1, echo: true });
  await connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
  east = clusterRest(stateDir, EAST);
  url = await startDashboard();
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
});

afterAll(async () => {
  await browser?.close();
  proxy?.kill('SIGTERM');
  await down(stateDir);
});

describe('skein dashboard in a browser', () => {
  it('shows both clusters and the link between them as synced, live', async () => {
    await page.goto(url);
    await page.waitForSelector(`svg.graph g[data-cluster="${EAST}"]`, WAIT);
    await page.waitForSelector(`svg.graph g[data-cluster="${WEST}"]`, WAIT);
    await page.waitForSelector(`svg.graph g[data-link="${WEST}"][data-state="synced"]`, WAIT);
    expect(await page.textContent(`tr[data-link-row="${WEST}"]`)).toContain('synced');
    await page.waitForSelector('#live.on', WAIT);
    await page.waitForSelector('tr[data-service="default/echo"]', WAIT);
    // Two bundles: east's own and west's, federated; shown by expiry, never by content.
    await page.waitForSelector(`tr[data-bundle="${WEST}.skein"]`, WAIT);
    expect(await page.content()).not.toContain('BEGIN CERTIFICATE');
  });

  it("shows a node's use of services far beyond the 500 one agent value held, and skein status --node lists them all", async () => {
    // 600 more global services straight into east's export (the exporter prunes only at its start): east's
    // agent programs them and publishes its view in shards; the dashboard and the CLI assemble them.
    const N = 600;
    const etcd = meshEtcd(stateDir, EAST);
    const bulk = (i: number) => `svc-${String(i).padStart(5, '0')}`;
    const put = (i: number) =>
      etcd.put(keys.service(EAST, 'bulk', bulk(i))).value(
        encodeValue(GlobalService, {
          cluster: EAST, namespace: 'bulk', name: bulk(i), shared: true, affinity: 'local',
          clusterIps: [`100.66.${Math.floor(i / 250)}.${(i % 250) + 1}`], ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
          backends: [{ ip: `10.44.${Math.floor(i / 250)}.${(i % 250) + 1}`, ports: { http: { port: 8080, protocol: 'TCP' } }, ready: true, serving: true, terminating: false }],
        }),
      );
    try {
      for (let i = 0; i < N; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => put(i + j)));
      await page.goto(url);
      await page.fill('#search', `bulk/${bulk(N - 1)}`);
      await page.waitForSelector(`tr[data-service="bulk/${bulk(N - 1)}"] .in-use`, WAIT);
      expect(await page.textContent(`tr[data-service="bulk/${bulk(N - 1)}"]`)).toContain(`${EAST} 1/1 ready · 1 in use`);

      const node = `${EAST}-node-1`;
      const out = await new Promise<string>((resolve, reject) => {
        const p = skein(['status', '--context', `skein-${EAST}`, '--node', node, '--json']);
        let text = '';
        let err = '';
        p.stdout.on('data', (c: Buffer) => (text += c.toString()));
        p.stderr.on('data', (c: Buffer) => (err += c.toString()));
        p.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`skein status --node exited ${code}: ${err}`))));
      });
      const view = AgentView.parse(JSON.parse(out));
      expect(view.truncated).toBe(false);
      expect(Object.keys(view.programmed).length).toBeGreaterThanOrEqual(N);
      expect(view.programmed[`TCP/100.66.2.100:80`]).toEqual([`10.44.2.100:8080`]); // bulk 599
    } finally {
      await etcd.delete().prefix(keys.kindPrefix(EAST, 'services') + 'bulk/');
      etcd.close();
    }
  });

  it("shows west's backends in use by east's nodes once east's echo is scaled to zero", async () => {
    await page.goto(`${url}#service=default/echo`);
    await page.waitForSelector(`tr[data-backend-cluster="${EAST}"][data-in-use="true"]`, WAIT);
    expect(await page.locator(`tr[data-backend-cluster="${WEST}"][data-in-use="true"]`).count()).toBe(0);

    await scale(east, 'echo', 0);
    // No reload: the page follows the event stream.
    await page.waitForSelector(`tr[data-backend-cluster="${WEST}"][data-in-use="true"]`, WAIT);
    // Browser-side code as a string: this file is compiled without the DOM's types.
    await page.waitForFunction(`document.querySelectorAll('tr[data-backend-cluster="${EAST}"][data-in-use="true"]').length === 0`, undefined, WAIT);
    expect(await page.textContent(`tr[data-backend-cluster="${WEST}"][data-in-use="true"]`)).toContain(`${EAST}-node-`); // the east node using it
    await page.screenshot({ path: artifactPath('dashboard-failover.png'), fullPage: true });

    await scale(east, 'echo', 2);
    await readyPods(east, 'app=echo', 2);
    await page.waitForSelector(`tr[data-backend-cluster="${EAST}"][data-in-use="true"]`, WAIT);
  });

  it("renders a drill's --html report as a timeline, and the dashboard shows the drill it kept", async () => {
    const html = join(mkdtempSync(join(tmpdir(), 'skein-drill-html-')), 'drill.html');
    const drill = skein(['drill', '--context', `skein-${EAST}`, '--service', 'default/echo', '--phase-ms', '1500', '--html', html]);
    let err = '';
    drill.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => drill.on('exit', resolve));
    expect(code, err).toBe(0);
    expect(existsSync(html)).toBe(true);
    expect(readFileSync(html, 'utf8')).not.toMatch(/<script[^>]+src=|<link[^>]+href=/); // standalone

    const report = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    await report.goto(`file://${html}`);
    await report.waitForSelector('#timeline .uplot canvas', WAIT);
    expect(await report.getAttribute('#timeline', 'data-series')).toBe(`${EAST},${WEST},failed`);
    expect(Number(await report.getAttribute('#timeline', 'data-buckets'))).toBeGreaterThan(10);
    expect(await report.locator('#timeline .markers li[data-marker="fault"]').count()).toBe(1);
    expect(await report.locator('#timeline .markers li[data-marker="failover"]').count()).toBe(1);
    expect(await report.textContent('#timeline .u-legend')).toContain(WEST);
    // The chart drew bars: some pixels of the plot are coloured.
    const painted = await report.evaluate<number>(`(() => {
      const c = document.querySelector('#timeline .uplot canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    })()`);
    expect(painted).toBeGreaterThan(1000);
    await report.screenshot({ path: artifactPath('drill-report.png'), fullPage: true });
    await report.close();

    await page.goto(url);
    await page.waitForSelector('#drills #drill-chart .uplot canvas', WAIT);
    expect(await page.getAttribute('#drills #drill-chart', 'data-series')).toBe(`${EAST},${WEST},failed`);
  });
});
