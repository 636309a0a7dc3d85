// `skein dashboard`'s local proxy, attacked as a hostile web page in the user's browser would: it carries
// the user's Kubernetes credentials, so it must forward the dashboard's own read-only paths and nothing else.
import { createServer } from 'node:http';
import { KubeConfig } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { startDashboardProxy, upstreamPath } from './dashboard.js';

const HOST = '127.0.0.1:7475';
const proxied = (p: string) => `/api/v1/namespaces/skein-system/services/skein-apiserver:http/proxy/dashboard${p}`;

describe('skein dashboard proxy paths', () => {
  it("forwards the dashboard's pages and API under /dashboard/ of the service proxy, queries included", () => {
    expect(upstreamPath('/', HOST)).toEqual({ path: proxied('/') });
    expect(upstreamPath('/api/overview', 'localhost:7475')).toEqual({ path: proxied('/api/overview') });
    expect(upstreamPath('/api/services?offset=50&limit=50&q=echo', HOST)).toEqual({ path: proxied('/api/services?offset=50&limit=50&q=echo') });
    expect(upstreamPath('/api/services/default/echo', HOST)).toEqual({ path: proxied('/api/services/default/echo') });
    expect(upstreamPath('/api/events', HOST)).toEqual({ path: proxied('/api/events') });
  });

  it('refuses every path that would leave the dashboard: traversal, encoded traversal, other endpoints', () => {
    for (const url of ['/../v1/status', '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/api/v1/secrets', '/api/..%2f..%2fmetrics', '/metrics', '/v1/status', '/api/services/default/echo/../../../../x', '/api/services/a%2fb/c', '//evil.example/x', '/api/agents/../../x']) {
      expect(upstreamPath(url, HOST), url).toMatchObject({ status: 404 });
    }
  });

  it('refuses a page that reached it under another host name (DNS rebinding)', () => {
    expect(upstreamPath('/api/overview', 'evil.example:7475')).toMatchObject({ status: 403 });
    expect(upstreamPath('/api/overview', undefined)).toMatchObject({ status: 403 });
  });
});

describe('skein dashboard proxy forwarding', () => {
  it('streams server-sent events through as they come, with the kubeconfig credentials, and refuses writes', async () => {
    let seenAuth: string | undefined;
    let push: ((s: string) => void) | undefined;
    const kube = createServer((req, res) => {
      seenAuth = req.headers.authorization;
      if (req.url !== proxied('/api/events')) return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-not-passed': 'secret' });
      res.write('event: change\ndata: {"version":1}\n\n');
      push = (s) => res.write(s);
    });
    await new Promise<void>((r) => kube.listen(0, '127.0.0.1', r));
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: `http://127.0.0.1:${(kube.address() as { port: number }).port}`, skipTLSVerify: true }], // plain HTTP: client-node wants this said
      users: [{ name: 'u', token: 'user-token' }],
      contexts: [{ name: 'ctx', cluster: 'c', user: 'u' }],
      currentContext: 'ctx',
    });
    const { url, server } = await startDashboardProxy(kc, 0);
    try {
      const res = await fetch(`${url}api/events`);
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      expect(res.headers.get('x-not-passed')).toBeNull();
      const reader = res.body!.getReader();
      const next = async () => new TextDecoder().decode((await reader.read()).value as Uint8Array);
      expect(await next()).toContain('"version":1');
      push!('event: change\ndata: {"version":2}\n\n');
      expect(await next()).toContain('"version":2'); // not held back until the stream ends
      expect(seenAuth).toBe('Bearer user-token');
      await reader.cancel();
      expect((await fetch(`${url}api/overview`, { method: 'POST' })).status).toBe(405);
    } finally {
      server.close();
      server.closeAllConnections();
      kube.closeAllConnections();
      kube.close();
    }
  });
});
