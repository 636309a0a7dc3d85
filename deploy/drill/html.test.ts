import { describe, expect, it } from 'vitest';
import { drillHtml } from './html.js';
import { drillReport } from './report.js';

describe('skein drill --html', () => {
  it('writes one standalone page: data, chart code and styles inlined, nothing fetched', () => {
    const r = drillReport({
      service: 'default/echo', cluster: 'east', affinity: 'local', fault: 'scale', target: 'local', faultedCluster: 'east', faultedPods: ['echo-0'],
      address: '100.64.0.1:80', protocol: 'http', intervalMs: 10,
      outcomes: Array.from({ length: 50 }, (_, seq) => ({ seq, at: 1000 + seq * 10, ok: seq !== 20, ms: 1, cluster: seq < 20 ? 'east' : 'west', ...(seq === 20 ? { error: 'timeout' } : {}) })),
      events: { takenAt: 1190, lostAt: 1195, restoredAt: 1300, readyAt: 1350 },
    });
    const html = drillHtml(r);
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org)/);
    const data = /<script type="application\/json" id="drill-data">([\s\S]*?)<\/script>/.exec(html)![1]!;
    expect(JSON.parse(data)).toEqual(r);
    expect(html).toContain('u-legend'); // uPlot's own CSS and code are in the file
  });

  it('keeps names that look like markup inert', () => {
    const r = drillReport({
      service: 'default/</script><script>alert(1)</script>', cluster: 'east', affinity: 'local', fault: 'scale', target: 'local', faultedCluster: 'east', faultedPods: [],
      address: 'x', protocol: 'http', intervalMs: 10, outcomes: [], events: { takenAt: 0, lostAt: 0, restoredAt: 0, readyAt: 0 },
    });
    const html = drillHtml(r);
    expect(html).not.toContain('<script>alert(1)');
    expect(html.match(/<\/script>/g)!.length).toBe(2);
  });
});
