// `skein drill`: take a cluster's local backends of a global service away and back, and report how traffic
// from a client pod in that cluster failed over to another cluster and back.
import { positiveInt } from './flags.js';
import type { Command } from 'commander';
import { DEFAULT_CLIENT_IMAGE, runDrill, type DrillProtocol } from '../drill/run.js';
import { renderDrillReport } from '../drill/report.js';
import { kubeconfigFor } from './status.js';

const PROTOCOLS = ['http', 'tcp', 'udp'] as const;

export function registerDrill(program: Command): void {
  program
    .command('drill')
    .description("fail a global service's local backends over to another cluster and back, and measure it (Kubernetes API only)")
    .requiredOption('--service <ns/name>', 'the global service, e.g. default/echo')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--context <ctx>', 'kubeconfig context of the cluster to drill')
    .option('--protocol <p>', `what the client sends: ${PROTOCOLS.join(', ')}`, 'http')
    .option('--port <port>', 'the service port (default: the first of the protocol)')
    .option('--interval-ms <ms>', 'one request every this many ms', '20')
    .option('--request-timeout-ms <ms>', 'a request without an answer this long counts as lost', '500')
    .option('--phase-ms <ms>', 'how long to watch before, during and after the failover', '2000')
    .option('--timeout <seconds>', 'give up on any one step after this long', '60')
    .option('--image <image>', 'the client image', DEFAULT_CLIENT_IMAGE)
    .option('--json', 'print the report as JSON')
    .action(async (o: { service: string; kubeconfig?: string; context?: string; protocol: string; port?: string; intervalMs: string; requestTimeoutMs: string; phaseMs: string; timeout: string; image: string; json?: boolean }) => {
      if (!PROTOCOLS.includes(o.protocol as DrillProtocol)) throw new Error(`--protocol ${o.protocol}: use ${PROTOCOLS.join(', ')}`);
      const report = await runDrill({
        kc: kubeconfigFor(o),
        service: o.service,
        protocol: o.protocol as DrillProtocol,
        port: o.port === undefined ? undefined : positiveInt('--port', o.port, 65_535),
        intervalMs: positiveInt('--interval-ms', o.intervalMs, 10_000),
        requestTimeoutMs: positiveInt('--request-timeout-ms', o.requestTimeoutMs, 60_000),
        phaseMs: positiveInt('--phase-ms', o.phaseMs, 600_000),
        stepTimeoutMs: positiveInt('--timeout', o.timeout, 3_600) * 1000,
        image: o.image,
        progress: (m) => console.error(`  ${m}`),
      });
      console.log(o.json ? JSON.stringify(report, null, 2) : renderDrillReport(report));
    });
}
