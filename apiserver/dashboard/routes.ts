// The dashboard on skein-apiserver's existing HTTP server: the bundled UI (ui/, built into dist/ui by
// esbuild) and a read-only JSON + SSE API under /dashboard/. Reached like /v1/status, through the
// Kubernetes API's service proxy (`skein dashboard`), so it opens no port of its own and inherits the
// Kubernetes API's authentication and RBAC (services/proxy). Every URL the UI uses is relative.
import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { AgentDetail, DashboardOverview, FirstData, ServiceDetail, ServicePage } from '../../mesh/dashboard.js';
import { DRILL_HISTORY, DrillHistory } from '../../mesh/drill-report.js';
import { SKEIN_NAMESPACE } from '../../mesh/service-ref.js';
import { inlineUiBundle, jsonForScript } from '../../mesh/ui-bundle.js';
import { firstIssue } from '../../mesh/schema/issue.js';
import type { Catalog } from './catalog.js';
import type { DrillHistoryReader } from './drills.js';
import { DashboardViews, linksFingerprint, overview, type StatusCore } from './views.js';

const PAGE_MAX = 200;

const PageQuery = z.strictObject({
  offset: z.coerce.number({ error: 'expected a whole number of rows to skip, such as 0 or 50' }).int('expected a whole number, such as 0 or 50').min(0, 'must be 0 or more').default(0),
  limit: z.coerce.number({ error: `expected a page size from 1 to ${PAGE_MAX}` }).int(`expected a whole page size from 1 to ${PAGE_MAX}`).min(1, `must be 1 to ${PAGE_MAX}`).max(PAGE_MAX, `must be 1 to ${PAGE_MAX}`).default(50),
  q: z.string().max(200, 'a search of at most 200 characters').default(''),
});

/** The first page of services the page shows (the UI's page size): inlined into the page. */
const FIRST_PAGE = { offset: 0, limit: 50, q: '' };

/**
 * The page: the UI's CSS and JS inline and the first data (overview, first page of services) as a JSON
 * block, so a first render costs this one response: every round trip crosses `skein dashboard`'s proxy and
 * the Kubernetes API's service proxy. The CSP lets run that one script, by its hash, and nothing else.
 */
function pageHtml(cluster: string, bundle: { js: string; css: string }, first: FirstData): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Skein · ${cluster.replace(/[^a-z0-9-]/g, '')}</title><style>${bundle.css}</style></head>
<body><div id="app">loading…</div>
<script type="application/json" id="first-data">${jsonForScript(first)}</script>
<script>${bundle.js}</script></body></html>
`;
}

/** The UI may talk to this server only and run its own inline bundle only; uPlot sets inline styles. */
const csp = (scriptHash: string) => `default-src 'none'; script-src '${scriptHash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** How often link states are compared for the live stream (in memory: the sync engine's own status). */
const STATUS_POLL_MS = 250;
const SSE_KEEPALIVE_MS = 15_000;

export interface DashboardDeps {
  catalog: Catalog;
  status: () => StatusCore;
  drills: DrillHistoryReader;
}

/** 400 naming the parameter and what it takes. */
function badQuery(reply: FastifyReply, error: z.ZodError) {
  const issue = error.issues[0];
  const message = issue?.code === 'unrecognized_keys' ? `unknown query parameter ${issue.keys.join(', ')}: use offset, limit, q` : `query parameter ${firstIssue(error, '', 'query')}`;
  return reply.code(400).send({ error: message });
}

/** Registers the routes; their timers and open event streams end with the server (preClose). */
export function registerDashboard(app: FastifyInstance, deps: DashboardDeps): void {
  const { catalog } = deps;
  const views = new DashboardViews(catalog, deps.status().cluster);
  // Link states change without an etcd write here (heartbeats, lag): a fingerprint of them bumps the version.
  let statusVersion = 0;
  let fingerprint = linksFingerprint(deps.status());
  const version = () => catalog.version + statusVersion;
  const subscribers = new Map<() => void, () => void>();
  const notify = () => [...subscribers.keys()].forEach((fn) => fn());
  const unsubscribe = catalog.onChange(notify);
  const poll = setInterval(() => {
    const next = linksFingerprint(deps.status());
    if (next === fingerprint) return;
    fingerprint = next;
    statusVersion++;
    notify();
  }, STATUS_POLL_MS);
  poll.unref();

  // Read once: the bundle changes only with the image.
  let bundle: { js: string; css: string; scriptHash: string } | undefined;
  const inlined = () => {
    if (bundle) return bundle;
    const { js, css } = inlineUiBundle('dashboard');
    return (bundle = { js, css, scriptHash: `sha256-${createHash('sha256').update(js).digest('base64')}` });
  };
  const overviewNow = () => DashboardOverview.parse(overview(deps.status(), catalog, version()));

  app.get('/dashboard', async (_req, reply) => reply.redirect('dashboard/'));
  app.get('/dashboard/', async (_req, reply) => {
    const b = inlined();
    const first = FirstData.parse({ overview: overviewNow(), page: views.page(FIRST_PAGE, version()) });
    reply.header('content-security-policy', csp(b.scriptHash)).header('cache-control', 'no-cache').type('text/html; charset=utf-8');
    return pageHtml(first.overview.cluster, b, first);
  });

  app.get('/dashboard/api/overview', async () => overviewNow());
  app.get('/dashboard/api/services', async (req, reply) => {
    const q = PageQuery.safeParse(req.query);
    if (!q.success) return badQuery(reply, q.error);
    return ServicePage.parse(views.page(q.data, version()));
  });
  app.get<{ Params: { namespace: string; name: string } }>('/dashboard/api/services/:namespace/:name', async (req, reply) => {
    const name = `${req.params.namespace}/${req.params.name}`;
    const detail = views.detail(name, version());
    return detail ? ServiceDetail.parse(detail) : reply.code(404).send({ error: `no global service ${name} in this cluster or its remotes` });
  });
  app.get<{ Params: { node: string } }>('/dashboard/api/agents/:node', async (req, reply) => {
    const detail = views.agent(req.params.node, version());
    return detail ? AgentDetail.parse(detail) : reply.code(404).send({ error: `no agent view from node ${req.params.node} (is skein-agent running there?)` });
  });
  app.get('/dashboard/api/drills', async (_req, reply) => {
    try {
      return DrillHistory.parse(await deps.drills.drills());
    } catch (err) {
      return reply.code(502).send({ error: `cannot read the drill history (ConfigMap ${SKEIN_NAMESPACE}/${DRILL_HISTORY.configMap}): ${(err as Error).message}` });
    }
  });

  // Server-sent events: one `change` event with the new version whenever what the dashboard shows changed;
  // the UI then re-reads the views it has open (a page of rows, not the whole catalog).
  app.get('/dashboard/api/events', (req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    const send = () => res.write(`event: change\ndata: ${JSON.stringify({ version: version() })}\n\n`);
    send();
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), SSE_KEEPALIVE_MS);
    // An open stream would hold the server's close forever: closing ends it.
    subscribers.set(send, () => res.end());
    req.raw.on('close', () => {
      clearInterval(keepalive);
      subscribers.delete(send);
    });
  });

  app.addHook('preClose', async () => {
    clearInterval(poll);
    unsubscribe();
    for (const end of subscribers.values()) end();
  });
}
