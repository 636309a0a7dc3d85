// `skein drill --html FILE`: a standalone report — the drill's JSON, the timeline bundle (uPlot, built
// from ui/ at build time) and its CSS inlined in one HTML file that opens offline, fetches nothing.
import type { DrillReport } from '../../mesh/drill-report.js';
import { inlineUiBundle, jsonForScript } from '../../mesh/ui-bundle.js';

const escapeHtml = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function drillHtml(r: DrillReport): string {
  const { js, css } = inlineUiBundle('drill-report');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>Skein drill · ${escapeHtml(r.service)} from ${escapeHtml(r.cluster)}</title>
<style>${css}</style></head>
<body><div id="app"></div>
<script type="application/json" id="drill-data">${jsonForScript(r)}</script>
<script>${js}</script></body></html>
`;
}
