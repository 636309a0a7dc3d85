// `skein dashboard`'s local proxy, attacked as a hostile web page in the user's browser would: it carries
// the user's Kubernetes credentials, so it must forward the dashboard's own read-only paths and nothing else.
import { describe, expect, it } from 'vitest';
import { upstreamPath } from './dashboard.js';

const HOST = '127.0.0.1:7475';
const proxied = (p: string) => `/api/v1/namespaces/skein-system/services/skein-apiserver:http/proxy/dashboard${p}`;

describe('skein dashboard proxy paths', () => {
  it("forwards the dashboard's pages and API under /dashboard/ of the service proxy, queries included", () => {
    expect(upstreamPath('/', HOST)).toEqual({ path: proxied('/') });
    expect(upstreamPath('/app.js', 'localhost:7475')).toEqual({ path: proxied('/app.js') });
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
