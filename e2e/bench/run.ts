// `npm run bench`: runs the benchmarks on the local test bed (root needed), writes bench-results/<suite>.json
// and prints a table. Each load is bounded by its own counts; nothing here is a pass/fail test.
import { parseArgs } from 'node:util';
import { exportBench } from './export-bench.js';
import { meshBench } from './mesh-bench.js';
import { table, writeResults } from './report.js';

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    changes: { type: 'string', default: '200' },
    services: { type: 'string', default: '1000' },
    backends: { type: 'string', default: '10' },
    'remote-services': { type: 'string', default: '10000' },
  },
});

const suites: Record<string, () => Promise<import('./report.js').Result[]>> = {
  export: () => exportBench({ changes: Number(values.changes), services: Number(values.services), backends: Number(values.backends) }),
  mesh: () => meshBench({ changes: Number(values.changes), remoteServices: Number(values['remote-services']), backends: Number(values.backends) }),
};

for (const [name, run] of Object.entries(suites)) {
  if (values.only && values.only !== name) continue;
  console.error(`bench: ${name} ...`);
  const results = await run();
  const file = writeResults(name, results, { node: process.version, cpus: (await import('node:os')).cpus().length });
  console.log(`\n== ${name} (${file})\n${table(results)}`);
}
