// The apiserver's HTTP side (fastify): liveness, readiness (only after the initial export is synced),
// Prometheus metrics, the status JSON that `skein status` reads through the Kubernetes API proxy, and the
// read-only dashboard (dashboard/) reached the same way.
import Fastify, { type FastifyInstance } from 'fastify';
import { registerDashboard, type DashboardDeps } from './dashboard/routes.js';
import type { Exporter } from './export/exporter.js';
import type { Metrics } from './metrics.js';
import { ApiserverStatus } from '../mesh/status.js';

export function buildHttp(exporter: Exporter, metrics: Metrics, status: () => Promise<ApiserverStatus>, dashboard?: DashboardDeps): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/healthz', async () => 'ok\n');
  app.get('/readyz', async (_req, reply) => {
    if (!exporter.isSynced) return reply.code(503).send('initial export not synced yet\n');
    return 'ok\n';
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  // Checked against the contract before it leaves: a bug here fails loudly, not in every reader.
  app.get('/v1/status', async () => ApiserverStatus.parse(await status()));
  if (dashboard) registerDashboard(app, dashboard);
  return app;
}
