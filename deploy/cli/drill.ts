// `skein drill`: fault a global service's backends in this cluster or another one, and report how traffic
// from a client pod in this cluster failed over to another cluster and back.
import { existsSync, writeFileSync } from 'node:fs';
import { positiveInt } from './flags.js';
import type { Command } from 'commander';
import { DEFAULT_CLIENT_IMAGE, runDrill, type DrillProtocol } from '../drill/run.js';
import { FAULTS, renderDrillReport, TARGETS, type DrillFault, type DrillTarget } from '../drill/report.js';
import { testbedNetFaults } from './local.js';
import { kubeconfigFor } from './status.js';
import { drillHtml } from '../drill/html.js';
import { keepDrill } from '../drill/history.js';
import { KubeRest } from '../../mesh/kube/rest.js';

const PROTOCOLS = ['http', 'tcp', 'udp'] as const;

interface FaultFlags {
  fault?: string;
  target?: string;
  context?: string;
  remoteContext?: string;
}

/** --fault, --target and --remote-context checked together: errors name the flag and what it takes. */
export function faultFlags(o: FaultFlags): { fault: DrillFault; target: DrillTarget; remoteContext?: string } {
  const fault = (o.fault ?? 'scale') as DrillFault;
  const target = (o.target ?? 'local') as DrillTarget;
  if (!FAULTS.includes(fault)) throw new Error(`--fault ${o.fault}: use ${FAULTS.join(', ')}`);
  if (!TARGETS.includes(target)) throw new Error(`--target ${o.target}: use ${TARGETS.join(', ')}`);
  if (target === 'remote' && !o.remoteContext) throw new Error('--target remote needs --remote-context CONTEXT: the kubeconfig context of the cluster whose backends the drill faults');
  if (target === 'local' && o.remoteContext) throw new Error(`--remote-context ${o.remoteContext} is for --target remote: add --target remote to fault that cluster's backends, or drop --remote-context`);
  if (o.remoteContext !== undefined && o.remoteContext === o.context) throw new Error(`--remote-context ${o.remoteContext} is the drill's own cluster (--context): give the context of the cluster to fault`);
  return { fault, target, ...(o.remoteContext ? { remoteContext: o.remoteContext } : {}) };
}

function remoteKubeconfig(kubeconfig: string | undefined, context: string) {
  try {
    return kubeconfigFor({ kubeconfig, context });
  } catch (err) {
    throw new Error((err as Error).message.replace(/^--context /, '--remote-context '), { cause: err });
  }
}

export function registerDrill(program: Command): void {
  program
    .command('drill')
    .description("fault a global service's backends (here or in another cluster), watch its traffic fail over to another cluster and back, and measure it")
    .requiredOption('--service <ns/name>', 'the global service, e.g. default/echo')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG or ~/.kube/config)')
    .option('--context <ctx>', 'kubeconfig context of the cluster the client runs in')
    .option('--fault <fault>', `what happens to the backends: scale (owners to 0 and back), kill (pods deleted, grace 0), blackhole (no answers while Kubernetes sees them ready; needs skein local)`, 'scale')
    .option('--target <target>', `whose backends: ${TARGETS.join(' (the client cluster\'s) or ')} (another cluster's, --remote-context)`, 'local')
    .option('--remote-context <ctx>', 'with --target remote: kubeconfig context of the cluster whose backends are faulted')
    .option('--state-dir <dir>', 'blackhole: the skein local state dir (default: next to the kubeconfig, then the default one)')
    .option('--protocol <p>', `what the client sends: ${PROTOCOLS.join(', ')}`, 'http')
    .option('--port <port>', 'the service port (default: the first of the protocol)')
    .option('--interval-ms <ms>', 'one request every this many ms', '20')
    .option('--request-timeout-ms <ms>', 'a request without an answer this long counts as lost', '500')
    .option('--phase-ms <ms>', 'how long to watch before, during (the fault) and after the failover', '2000')
    .option('--timeout <seconds>', 'give up on any one step after this long', '60')
    .option('--image <image>', 'the client image', DEFAULT_CLIENT_IMAGE)
    .option('--json', 'print the report as JSON')
    .option('--html <file>', 'also write a standalone HTML report with the timeline chart to this file')
    .option('--no-keep', "do not keep the report in the cluster's drill history (ConfigMap skein-system/skein-drills, shown by skein dashboard)")
    .action(async (o: FaultFlags & { service: string; kubeconfig?: string; stateDir?: string; protocol: string; port?: string; intervalMs: string; requestTimeoutMs: string; phaseMs: string; timeout: string; image: string; json?: boolean; html?: string; keep: boolean }) => {
      if (!PROTOCOLS.includes(o.protocol as DrillProtocol)) throw new Error(`--protocol ${o.protocol}: use ${PROTOCOLS.join(', ')}`);
      const { fault, target, remoteContext } = faultFlags(o);
      const kubeconfig = o.kubeconfig ?? process.env.KUBECONFIG?.split(':').find((f) => f && existsSync(f));
      const kc = kubeconfigFor(o);
      const report = await runDrill({
        kc,
        service: o.service,
        fault,
        target,
        remoteKc: remoteContext === undefined ? undefined : remoteKubeconfig(o.kubeconfig, remoteContext),
        // Only a blackhole (or repairing one) loads the test bed's fault code.
        netFaultsFor: (kc) => testbedNetFaults(kc, { stateDir: o.stateDir, kubeconfig }),
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
      if (o.html) {
        writeFileSync(o.html, drillHtml(report));
        console.error(`  wrote the HTML report to ${o.html}`);
      }
      // The drill's result stands on its own: a history that cannot be written is a warning, not a failure.
      if (o.keep) await keepDrill(new KubeRest(kc), report).catch((err: Error) => console.error(`  warning: the drill was not kept in the cluster's drill history: ${err.message}`));
    });
}
