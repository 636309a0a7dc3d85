// Issue 5's drill benchmark: `skein drill` repeated on a fresh two-cluster test bed; failover and failback
// times and lost requests as distributions over the repetitions.
import { connect } from '../../deploy/cli/connect.js';
import { DEFAULT_CLIENT_IMAGE, runDrill, type DrillProtocol } from '../../deploy/drill/run.js';
import { down, up } from '../../testbed/testbed.js';
import { clusterKubeconfig, clusterRest, readyPods, tempStateDir } from '../tests/helpers.js';
import { distribution, type Result } from './report.js';

const A = 'drill-a';
const B = 'drill-b';

export async function drillBench(opts: { repetitions: number; protocol: DrillProtocol; intervalMs: number }): Promise<Result[]> {
  const stateDir = tempStateDir('bench-drill');
  try {
    await up({ stateDir, clusters: [{ name: A, id: 71 }, { name: B, id: 72 }], nodes: 2, echo: true });
    await connect(clusterKubeconfig(stateDir, A), clusterKubeconfig(stateDir, B), () => {});
    const failover: number[] = [];
    const failback: number[] = [];
    const lost: number[] = [];
    let missed = 0;
    for (let i = 0; i < opts.repetitions; i++) {
      const r = await runDrill({ kc: clusterKubeconfig(stateDir, A), service: 'default/echo', protocol: opts.protocol, intervalMs: opts.intervalMs, requestTimeoutMs: 500, phaseMs: 1000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} });
      if (r.failoverMs === null || r.failbackMs === null) missed++;
      if (r.failoverMs !== null) failover.push(r.failoverMs);
      if (r.failbackMs !== null) failback.push(r.failbackMs);
      lost.push(r.requestsLost);
      console.error(`  drill ${i + 1}/${opts.repetitions}: failover ${r.failoverMs} ms, failback ${r.failbackMs} ms, lost ${r.requestsLost}`);
      await readyPods(clusterRest(stateDir, A), 'app=echo', 2);
    }
    const how = `${opts.protocol}, one request per ${opts.intervalMs} ms (the resolution)`;
    return [
      distribution('drill failover (last local backend lost -> first remote answer)', 'ms', failover, how),
      distribution('drill failback (local backend ready -> first local answer)', 'ms', failback, how),
      distribution('drill requests lost per drill', 'requests', lost, `${lost.reduce((a, b) => a + b, 0)} in all`),
      { name: 'drills without an observed failover or failback', unit: 'drills', value: missed, note: `of ${opts.repetitions}` },
    ];
  } finally {
    await down(stateDir);
  }
}
