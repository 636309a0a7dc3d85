// A drill's timeline (uPlot): requests per time bucket, stacked by the cluster that answered them, failures
// on top, with the fault and the failover/failback moments as vertical markers. Used by the dashboard and
// the standalone HTML report `skein drill --html` writes, so both show the same chart.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { DrillReport } from '../mesh/drill-report.js';
import { h } from './dom.js';

const PALETTE = ['#2b7bb9', '#3aa655', '#8e5cc4', '#d08a1c', '#1aa3a3', '#b8478c'];
const FAILED = '#d6333a';

interface Marker {
  id: string;
  label: string;
  /** ms from the first request */
  at: number;
  color: string;
}

/** The moments a drill report names, in ms from its first request. */
function drillMarkers(r: DrillReport): Marker[] {
  const t = r.timeline;
  const m: Marker[] = [{ id: 'fault', label: `fault (${r.fault})`, at: t.faultAt, color: FAILED }];
  if (r.failoverMs !== null) m.push({ id: 'failover', label: `failover ${r.failoverMs} ms`, at: t.faultAt + r.failoverMs, color: '#555' });
  m.push({ id: 'restored', label: 'fault undone', at: t.restoredAt, color: '#999' });
  if (r.failbackMs !== null) m.push({ id: 'failback', label: `failback ${r.failbackMs} ms`, at: t.readyAt + r.failbackMs, color: '#555' });
  return m;
}

/** Cluster names in the order they stack: the client's own first. */
function seriesNames(r: DrillReport): string[] {
  const names = Object.keys(r.buckets?.answered ?? {});
  return names.sort((a, b) => Number(b === r.cluster) - Number(a === r.cluster) || a.localeCompare(b));
}

/**
 * Renders the chart into `el` (replacing what was there) and returns it. uPlot has no stacking of its own:
 * each series holds the running sum, drawn from the tallest down so every band shows its own share; the
 * legend shows each band's own count.
 */
export function renderTimeline(el: HTMLElement, r: DrillReport, width = Math.max(480, el.clientWidth || 860)): uPlot | undefined {
  el.replaceChildren();
  el.classList.add('timeline');
  const b = r.buckets;
  if (!b) {
    el.append(h('p', { class: 'muted' }, 'This drill report has no timeline (made by an older skein).'));
    return undefined;
  }
  const clusters = seriesNames(r);
  const raw = [...clusters.map((c) => b.answered[c]!), b.failed];
  const labels = [...clusters, 'failed'];
  const colors = [...clusters.map((_, i) => PALETTE[i % PALETTE.length]!), FAILED];
  const xs = b.failed.map((_, i) => (i * b.bucketMs) / 1000);
  const stacked: number[][] = [];
  raw.forEach((s, i) => stacked.push(s.map((v, j) => v + (i ? stacked[i - 1]![j]! : 0))));
  const order = labels.map((_, i) => i).reverse(); // tallest first, so lower bands paint over it
  const markers = drillMarkers(r);
  const bars = uPlot.paths.bars!({ size: [1, Infinity], gap: 0 });
  el.dataset.buckets = String(xs.length);
  el.dataset.series = labels.join(',');
  const plot = new uPlot(
    {
      width,
      height: 260,
      scales: { x: { time: false } },
      axes: [{ label: 'seconds from the first request' }, { label: `requests per ${b.bucketMs} ms` }],
      series: [
        { label: 's' },
        ...order.map((i) => ({
          label: labels[i]!,
          stroke: colors[i]!,
          fill: colors[i]!,
          paths: bars,
          points: { show: false },
          value: (_u: uPlot, _v: number | null, _si: number, idx: number | null) => (idx === null ? '-' : String(raw[i]![idx] ?? 0)),
        })),
      ],
      hooks: {
        draw: [
          (u: uPlot) => {
            const ctx = u.ctx;
            ctx.save();
            ctx.font = `${12 * devicePixelRatio}px sans-serif`;
            markers.forEach((m, n) => {
              const x = Math.round(u.valToPos(m.at / 1000, 'x', true));
              ctx.strokeStyle = m.color;
              ctx.fillStyle = m.color;
              ctx.lineWidth = 2 * devicePixelRatio;
              ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.fillText(m.label, x + 4 * devicePixelRatio, u.bbox.top + (14 + 14 * n) * devicePixelRatio);
            });
            ctx.restore();
          },
        ],
      },
    },
    [xs, ...order.map((i) => stacked[i]!)],
    el,
  );
  el.append(
    h('ul', { class: 'markers' }, ...markers.map((m) => h('li', { 'data-marker': m.id, style: `border-color:${m.color}` }, `${m.label} at ${(m.at / 1000).toFixed(2)} s`))),
  );
  return plot;
}

/** The numbers beside the chart: what the text report prints. */
export function drillSummary(r: DrillReport): HTMLElement {
  const ms = (v: number | null) => (v === null ? 'not observed' : `${v} ms`);
  const rows: Array<[string, string]> = [
    ['fault', `${r.fault}: ${r.faulted.pods.length} ${r.target} backend(s) in ${r.faulted.cluster}`],
    ['failover', ms(r.failoverMs)],
    ['failback', ms(r.failbackMs)],
    ['ejected after', `${ms(r.ejectedAfterMs)}${r.ejectedFrom ? ` (from the ${r.ejectedFrom})` : ''}`],
    ['loss window', r.lossWindowMs === null ? 'none' : `${r.lossWindowMs} ms`],
    ['requests', `${r.requests} ${r.protocol} to ${r.address}, one every ${r.intervalMs} ms; ${r.requestsLost} lost`],
  ];
  return h('table', { class: 'kv drill-summary' }, ...rows.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { 'data-field': k }, v))));
}
