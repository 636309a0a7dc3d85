// `skein dashboard`: a local read-only proxy (like `kubectl proxy`, narrowed) from 127.0.0.1 to the
// dashboard skein-apiserver serves, through the Kubernetes API's service proxy with the kubeconfig's
// credentials. It forwards GETs of the dashboard's own paths only, so a page in the browser can never use it
// to reach anything else the credentials allow; event streams pass through as they arrive.
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Command } from 'commander';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../../mesh/kube/rest.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import { positiveInt } from './flags.js';
import { kubeconfigFor } from './status.js';

/** The dashboard's paths (apiserver/dashboard/routes.ts), relative to /dashboard/; nothing else is forwarded. */
const NAME = '[A-Za-z0-9][A-Za-z0-9._-]{0,252}';
const ALLOWED = new RegExp(`^/(|api/overview|api/services|api/drills|api/events|api/services/${NAME}/${NAME}|api/agents/${NAME})$`);
/** Like kubectl proxy's --accept-hosts default: a page served under another name (DNS rebinding) gets nothing. */
const LOCAL_HOSTS = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/;
const PASSED_HEADERS = ['content-type', 'cache-control', 'content-security-policy', 'location', 'etag', 'last-modified'];

/** The upstream path for a local request, or why it is refused. */
export function upstreamPath(rawUrl: string, host: string | undefined): { path: string } | { status: number; error: string } {
  if (!host || !LOCAL_HOSTS.test(host)) return { status: 403, error: `host ${host ?? '(none)'} refused: open the dashboard as http://127.0.0.1:<port>/` };
  const url = new URL(rawUrl, 'http://local');
  // The raw path too: `..` and `%2e%2e` segments were resolved by URL(), and must not have been there at all.
  if (!ALLOWED.test(url.pathname) || url.pathname !== rawUrl.split('?')[0]) return { status: 404, error: `not a dashboard path: ${url.pathname}` };
  return { path: skeinProxyPath(`/dashboard${url.pathname}${url.search}`) };
}

async function forward(rest: KubeRest, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const refuse = (status: number, error: string) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error }));
  if (req.method !== 'GET' && req.method !== 'HEAD') return void refuse(405, 'the dashboard is read-only: GET only');
  const target = upstreamPath(req.url ?? '/', req.headers.host);
  if ('error' in target) return void refuse(target.status, target.error);
  const headers: Record<string, string> = { accept: req.headers.accept ?? '*/*' };
  const upstream = await rest.stream(target.path, headers);
  const passed = Object.fromEntries(PASSED_HEADERS.flatMap((h) => (upstream.headers[h] ? [[h, upstream.headers[h]]] : [])));
  res.writeHead(upstream.statusCode ?? 502, passed);
  res.flushHeaders();
  upstream.pipe(res);
  res.on('close', () => upstream.destroy());
}

export async function startDashboardProxy(kc: KubeConfig, port: number): Promise<{ url: string; server: Server }> {
  const rest = new KubeRest(kc);
  const server = createServer((req, res) => {
    forward(rest, req, res).catch((err: Error) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ error: `cannot reach skein-apiserver through the Kubernetes API of ${kc.getCurrentContext()}: ${err.message}` }));
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const bound = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${bound}/`, server };
}

/** Opens the URL in a browser when this machine has one (a display and xdg-open); never fails otherwise. */
function openBrowser(url: string): boolean {
  if (!process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return false;
  const opener = (process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'xdg-open')).find((p) => existsSync(p));
  if (!opener) return false;
  spawn(opener, [url], { detached: true, stdio: 'ignore' }).on('error', () => {}).unref();
  return true;
}

export function registerDashboard(program: Command): void {
  program
    .command('dashboard')
    .description("open the cluster's live mesh dashboard: a local read-only proxy to it through the Kubernetes API")
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--context <ctx>', 'kubeconfig context of the cluster')
    .option('--port <port>', 'local port on 127.0.0.1 (0: any free one)', '7475')
    .option('--no-open', 'do not open a browser')
    .action(async (o: { kubeconfig?: string; context?: string; port: string; open: boolean }) => {
      const port = o.port === '0' ? 0 : positiveInt('--port', o.port, 65_535);
      const kc = kubeconfigFor(o);
      const { url } = await startDashboardProxy(kc, port);
      console.log(`skein dashboard of ${kc.getCurrentContext()}: ${url}`);
      if (o.open && !openBrowser(url)) console.error('  (no browser here: open the URL above in one; Ctrl-C stops the proxy)');
    });
}
