// `skein drill --html FILE`: a standalone report — the drill's JSON, the timeline bundle (uPlot, built
// from ui/ at build time) and its CSS inlined in one HTML file that opens offline, fetches nothing.
import type { DrillReport } from '../../mesh/drill-report.js';
import { readUiBundle } from '../../mesh/ui-bundle.js';

/** JSON or script text safe inside <script>: nothing in it can close the element or open a comment. */
const scriptSafe = (text: string) => text.replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
const escapeHtml = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function drillHtml(r: DrillReport): string {
  const js = readUiBundle('drill-report', 'js').replace(/<\/script/gi, '<\\/script');
  const css = readUiBundle('drill-report', 'css').replace(/<\/style/gi, '<\\/style');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>Skein drill · ${escapeHtml(r.service)} from ${escapeHtml(r.cluster)}</title>
<style>${css}</style></head>
<body><div id="app"></div>
<script type="application/json" id="drill-data">${scriptSafe(JSON.stringify(r))}</script>
<script>${js}</script></body></html>
`;
}
