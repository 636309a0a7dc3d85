// The apiserver's HTTP side (fastify): liveness, readiness (only after the initial export is synced),
// Prometheus metrics, the status JSON that `skein status` reads through the Kubernetes API proxy, and the
// read-only dashboard (dashboard/) reached the same way.
import Fastify, { type FastifyInstance } from 'fastify';
import { registerDashboard, type DashboardDeps } from './dashboard/routes.js';
import type { Exporter } from './export/exporter.js';
import type { Metrics } from './metrics.js';
import { ApiserverStatus } from '../mesh/status.js';
import { AgentView } from '../mesh/schema/values.js';

export interface StatusSources {
  /** /v1/status: each agent with its first AGENT_VIEW_MAX frontends. */
  status: () => Promise<ApiserverStatus>;
  /** /v1/status/agents/<node>: one node's whole view (`skein status --node`). */
  agentView: (node: string) => Promise<AgentView | undefined>;
}

export function buildHttp(exporter: Exporter, metrics: Metrics, sources: StatusSources, dashboard?: DashboardDeps): FastifyInstance {
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
  app.get('/v1/status', async () => ApiserverStatus.parse(await sources.status()));
  app.get<{ Params: { node: string } }>('/v1/status/agents/:node', async (req, reply) => {
    const view = await sources.agentView(req.params.node);
    return view ? AgentView.parse(view) : reply.code(404).send({ error: `no agent view from node ${req.params.node}: is skein-agent running there?` });
  });
  if (dashboard) registerDashboard(app, dashboard);
  return app;
}
