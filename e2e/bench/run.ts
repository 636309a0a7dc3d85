// `npm run bench`: runs the benchmarks on the local test bed (root needed), writes bench-results/<suite>.json
// and prints a table. Each load is bounded by its own counts; nothing here is a pass/fail test.
import { parseArgs } from 'node:util';
import { datapathBench } from './datapath-bench.js';
import { drillBench } from './drill-bench.js';
import { exportBench } from './export-bench.js';
import { svidBench } from './svid-bench.js';
import { meshBench } from './mesh-bench.js';
import { dashboardBench } from './dashboard-bench.js';
import { table, writeResults } from './report.js';

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    changes: { type: 'string', default: '200' },
    services: { type: 'string', default: '1000' },
    backends: { type: 'string', default: '10' },
    'remote-services': { type: 'string', default: '10000' },
    requests: { type: 'string', default: '5000' },
    'service-counts': { type: 'string', default: '1,1000,10000' },
    drills: { type: 'string', default: process.env.SKEIN_BENCH_DRILLS ?? '20' },
    'drill-cases': { type: 'string' },
    issuances: { type: 'string', default: '500' },
    'forge-issuances': { type: 'string', default: '20' },
    pods: { type: 'string', default: '20' },
    'dashboard-services': { type: 'string', default: '10000' },
    renders: { type: 'string', default: '5' },
    updates: { type: 'string', default: '10' },
  },
});

const suites: Record<string, () => Promise<import('./report.js').Result[]>> = {
  export: () => exportBench({ changes: Number(values.changes), services: Number(values.services), backends: Number(values.backends) }),
  mesh: () => meshBench({ changes: Number(values.changes), remoteServices: Number(values['remote-services']), backends: Number(values.backends) }),
  datapath: () => datapathBench({ requests: Number(values.requests), serviceCounts: values['service-counts'].split(',').map(Number) }),
  svid: () => svidBench({ issuances: Number(values.issuances), forgeIssuances: Number(values['forge-issuances']), pods: Number(values.pods) }),
  dashboard: () => dashboardBench({ services: Number(values['dashboard-services']), renders: Number(values.renders), updates: Number(values.updates) }),
  drill: () => drillBench({ repetitions: Number(values.drills), protocol: 'http', intervalMs: 10, cases: values['drill-cases']?.split(',').filter(Boolean) }),
};

for (const [name, run] of Object.entries(suites)) {
  if (values.only && values.only !== name) continue;
  console.error(`bench: ${name} ...`);
  const results = await run();
  const file = writeResults(name, results, { node: process.version, cpus: (await import('node:os')).cpus().length });
  console.log(`\n== ${name} (${file})\n${table(results)}`);
}
