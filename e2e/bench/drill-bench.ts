// Issue 14's drill benchmark: `skein drill` repeated on a fresh two-cluster test bed for each fault — scale,
// kill and blackhole of the client cluster's backends, and blackhole of the other cluster's (the client's
// service then on `remote` affinity) — with failover, loss window, ejection and failback as distributions
// over the repetitions, and the lost requests. `--drills N` (or SKEIN_BENCH_DRILLS) sets the repetitions per
// fault, `--drill-cases scale,kill` picks the cases (default all): a quick run is `--drills 3`.
import { connect } from '../../deploy/cli/connect.js';
import { DEFAULT_CLIENT_IMAGE, runDrill, type DrillProtocol } from '../../deploy/drill/run.js';
import type { DrillFault, DrillReport, DrillTarget } from '../../deploy/drill/report.js';
import { down, up } from '../../testbed/testbed.js';
import { lossConfined, testbedFaults } from '../tests/drill-helpers.js';
import { clusterKubeconfig, clusterRest, readyPods, tempStateDir } from '../tests/helpers.js';
import { distribution, type Result } from './report.js';

const A = 'drill-a';
const B = 'drill-b';

const CASES: Record<string, { fault: DrillFault; target: DrillTarget; note: string }> = {
  scale: { fault: 'scale', target: 'local', note: 'target ≤ 100 ms p99 failover, 0 lost' },
  kill: { fault: 'kill', target: 'local', note: 'target ≤ 250 ms p99 failover' },
  blackhole: { fault: 'blackhole', target: 'local', note: 'target ≤ 1 s p99, loss inside that window' },
  'blackhole-remote': { fault: 'blackhole', target: 'remote', note: 'target ≤ 1 s p99, loss inside that window' },
};
const DRILL_CASES = Object.keys(CASES);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const setAffinity = (cluster: string, stateDir: string, affinity: string) =>
  clusterRest(stateDir, cluster).patch('/api/v1/namespaces/default/services/echo', { metadata: { annotations: { 'skein.io/affinity': affinity } } });

export async function drillBench(opts: { repetitions: number; protocol: DrillProtocol; intervalMs: number; cases?: string[] }): Promise<Result[]> {
  const cases = opts.cases ?? DRILL_CASES;
  for (const c of cases) if (!CASES[c]) throw new Error(`--drill-cases ${c}: use ${DRILL_CASES.join(', ')}`);
  const stateDir = tempStateDir('bench-drill');
  try {
    await up({ stateDir, clusters: [{ name: A, id: 71 }, { name: B, id: 72 }], nodes: 2, echo: true });
    await connect(clusterKubeconfig(stateDir, A), clusterKubeconfig(stateDir, B), () => {});
    const results: Result[] = [];
    for (const name of cases) {
      const { fault, target, note } = CASES[name]!;
      if (target === 'remote') {
        await setAffinity(A, stateDir, 'remote');
        await sleep(2000); // the agents reprogram; the drill's own baseline phase follows
      }
      const reports: DrillReport[] = [];
      for (let i = 0; i < opts.repetitions; i++) {
        const r = await runDrill({
          kc: clusterKubeconfig(stateDir, A),
          service: 'default/echo',
          protocol: opts.protocol,
          fault,
          target,
          remoteKc: target === 'remote' ? clusterKubeconfig(stateDir, B) : undefined,
          netFaultsFor: testbedFaults(stateDir),
          intervalMs: opts.intervalMs,
          requestTimeoutMs: 500,
          phaseMs: 1000,
          stepTimeoutMs: 60_000,
          image: DEFAULT_CLIENT_IMAGE,
          progress: () => {},
        });
        reports.push(r);
        const slices = (r.timeline.faultAt !== r.timeline.takenAt ? `, in effect ${Math.round(r.timeline.faultAt - r.timeline.takenAt)} ms after the call` : '') + (r.timeline.lostAt === null ? '' : `, EndpointSlices lost it ${Math.round(r.timeline.lostAt - r.timeline.takenAt)} ms after the call`);
        const errors = Object.entries(r.lostErrors).map(([e, n]) => `${n}× ${e}`).join('; ');
        console.error(`  ${name} ${i + 1}/${opts.repetitions}: failover ${r.failoverMs} ms, ejected after ${r.ejectedAfterMs} ms (${r.ejectedFrom})${slices}, loss window ${r.lossWindowMs} ms, lost ${r.requestsLost}${errors ? ` (${errors})` : ''}, failback ${r.failbackMs} ms`);
        await readyPods(clusterRest(stateDir, target === 'remote' ? B : A), 'app=echo', 2);
      }
      if (target === 'remote') await setAffinity(A, stateDir, 'local');
      const how = `${opts.protocol}, one request per ${opts.intervalMs} ms (the resolution)`;
      const got = (f: (r: DrillReport) => number | null) => reports.flatMap((r) => f(r) ?? []);
      const lost = reports.map((r) => r.requestsLost);
      results.push(
        distribution(`${name}: failover (fault -> first answer from another cluster)`, 'ms', got((r) => r.failoverMs), `${how}; ${note}`),
        ...(fault === 'scale'
          ? []
          : [distribution(`${name}: failover from the drill's own call (${fault === 'kill' ? 'the delete request' : 'starting the rules'})`, 'ms', got((r) => (r.failoverMs === null ? null : r.failoverMs + r.timeline.faultAt - r.timeline.takenAt)), fault === 'kill' ? 'includes the API recording the deletion' : 'includes spawning iptables-restore into the pods')]),
        distribution(`${name}: loss window (first to last failed request; 0: none)`, 'ms', reports.map((r) => r.lossWindowMs ?? 0), how),
        distribution(`${name}: ejected after (fault -> datapath off the faulted backends)`, 'ms', got((r) => r.ejectedAfterMs), `from ${[...new Set(reports.map((r) => r.ejectedFrom ?? 'unobserved'))].join(', ')}`),
        distribution(`${name}: failback (faulted cluster usable -> its first answer)`, 'ms', got((r) => r.failbackMs), how),
        distribution(`${name}: requests lost per drill`, 'requests', lost, `${lost.reduce((a, b) => a + b, 0)} in all`),
        { name: `${name}: drills without an observed failover or failback`, unit: 'drills', value: reports.filter((r) => r.failoverMs === null || r.failbackMs === null).length, note: `of ${opts.repetitions}` },
        { name: `${name}: drills losing requests outside the fault's window`, unit: 'drills', value: reports.filter((r) => !lossConfined(r)).length, note: `of ${opts.repetitions}` },
      );
      if (fault === 'blackhole') results.push({ name: `${name}: drills where Kubernetes noticed the blackhole`, unit: 'drills', value: reports.filter((r) => r.faultedStayedReady !== true).length, note: `of ${opts.repetitions} (should be 0: a silent fault)` });
    }
    return results;
  } finally {
    await down(stateDir);
  }
}
