// Entry of the standalone drill report (`skein drill --html FILE`): the report's JSON is embedded in the
// page (script#drill-data), this bundle and its CSS are inlined by the CLI, so the file opens offline.
import type { DrillReport } from '../mesh/drill-report.js';
import { h } from './dom.js';
import { drillSummary, renderTimeline } from './timeline.js';
import './style.css';

const data = document.getElementById('drill-data')?.textContent;
const app = document.getElementById('app')!;
if (!data) app.textContent = 'This report has no drill data.';
else {
  // Written by the same skein that bundled this script (deploy/drill/html.ts): the JSON is a DrillReport.
  const r = JSON.parse(data) as DrillReport;
  const chart = h('div', { id: 'timeline' });
  app.replaceChildren(
    h('h1', {}, `Drill of ${r.service} from ${r.cluster}`),
    h('p', { class: 'muted' }, `${new Date(r.timeline.start).toISOString()} · affinity ${r.affinity}`),
    drillSummary(r),
    chart,
  );
  renderTimeline(chart, r);
}
