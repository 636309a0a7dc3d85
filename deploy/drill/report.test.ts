import { describe, expect, it } from 'vitest';
import type { Outcome } from '../images/outcome.js';
import { drillReport, renderDrillReport } from './report.js';

// A stream every 10 ms from t=0: east until 300, two lost at 300/310, west until 600, east again.
function stream(): Outcome[] {
  const out: Outcome[] = [];
  for (let seq = 0; seq < 90; seq++) {
    const at = 1_000_000 + seq * 10;
    const t = seq * 10;
    if (t === 300 || t === 310) out.push({ seq, at, ok: false, ms: 5, error: 'ECONNREFUSED' });
    else out.push({ seq, at, ok: true, ms: 2, cluster: t < 300 || t >= 620 ? 'east' : 'west' });
  }
  return out.reverse(); // order of arrival must not matter
}

const events = { takenAt: 1_000_250, lostAt: 1_000_295, restoredAt: 1_000_500, readyAt: 1_000_605 };
const report = () => drillReport({ service: 'default/echo', cluster: 'east', affinity: 'local', target: '100.64.0.10:80', protocol: 'http', intervalMs: 10, outcomes: stream(), events });

describe('drillReport', () => {
  it('measures failover from the loss to the first remote answer, and failback from ready to the first local answer', () => {
    const r = report();
    expect(r.failoverMs).toBe(320 + 2 - 295);
    expect(r.failbackMs).toBe(620 + 2 - 605);
    expect(r.requestsLost).toBe(2);
    expect(r.lostWindowMs).toEqual({ from: 5, to: 15 });
    expect(r.lostErrors).toEqual({ ECONNREFUSED: 2 });
    expect(r.requests).toBe(90);
  });

  it('splits the stream into phases by when each request was sent', () => {
    const [before, failover, after] = report().phases;
    expect(before).toEqual({ name: 'before', requests: 25, failed: 0, answeredBy: { east: 25 } });
    expect(failover).toEqual({ name: 'failover', requests: 36, failed: 2, answeredBy: { east: 5, west: 29 } });
    expect(after).toEqual({ name: 'after', requests: 29, failed: 0, answeredBy: { east: 28, west: 1 } });
  });

  it('reports null, not zero, when no remote answer ever came', () => {
    const onlyEast = stream().map((o) => ({ ...o, ok: true, cluster: 'east' }));
    const r = drillReport({ service: 's', cluster: 'east', affinity: 'local', target: 't', protocol: 'tcp', intervalMs: 10, outcomes: onlyEast, events });
    expect(r.failoverMs).toBeNull();
    expect(renderDrillReport(r)).toContain('failover       not observed');
  });

  it('renders a table with a column per cluster and for failures', () => {
    const text = renderDrillReport(report());
    expect(text).toMatch(/PHASE\s+REQUESTS\s+east\s+west\s+failed/);
    expect(text).toMatch(/failover\s+36\s+14%\s+81%\s+6%/);
  });
});
