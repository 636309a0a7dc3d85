import { describe, expect, it } from 'vitest';
import type { Outcome } from '../images/outcome.js';
import { clientEjectedAt, drillReport, lossSpan, renderDrillReport, type ReportInput } from './report.js';

const T0 = 1_000_000;

// A stream every 10 ms from t=0: east until 300, two lost at 300/310, west until 600, east again.
function stream(): Outcome[] {
  const out: Outcome[] = [];
  for (let seq = 0; seq < 90; seq++) {
    const at = T0 + seq * 10;
    const t = seq * 10;
    if (t === 300 || t === 310) out.push({ seq, at, ok: false, ms: 5, error: 'ECONNREFUSED' });
    else out.push({ seq, at, ok: true, ms: 2, cluster: t < 300 || t >= 620 ? 'east' : 'west', pod: t < 300 ? `echo-${seq % 2}` : t >= 620 ? 'echo-new' : 'echo-w' });
  }
  return out.reverse(); // order of arrival must not matter
}

const events = { takenAt: T0 + 250, lostAt: T0 + 295, restoredAt: T0 + 500, readyAt: T0 + 605 };
const input = (over: Partial<ReportInput> = {}): ReportInput => ({
  service: 'default/echo',
  cluster: 'east',
  affinity: 'local',
  fault: 'scale',
  target: 'local',
  faultedCluster: 'east',
  faultedPods: ['echo-0', 'echo-1'],
  address: '100.64.0.10:80',
  protocol: 'http',
  intervalMs: 10,
  outcomes: stream(),
  events,
  ...over,
});
const report = () => drillReport(input());

describe('drillReport', () => {
  it('measures failover from the loss to the first remote answer, and failback from ready to the first local answer', () => {
    const r = report();
    expect(r.failoverMs).toBe(320 + 2 - 295);
    expect(r.failbackMs).toBe(620 + 2 - 605);
    expect(r.requestsLost).toBe(2);
    expect(r.lostErrors).toEqual({ ECONNREFUSED: 2 });
    expect(r.requests).toBe(90);
    expect(r).toMatchObject({ fault: 'scale', target: 'local', faulted: { cluster: 'east', pods: ['echo-0', 'echo-1'] }, address: '100.64.0.10:80' });
  });

  it('reports the loss window from the first to the last failed request, placed relative to the fault', () => {
    const r = report();
    expect(r.lossWindowMs).toBe(10);
    expect(r.lossWindow).toEqual({ from: 5, to: 15 });
    const clean = drillReport(input({ outcomes: stream().filter((o) => o.ok) }));
    expect(clean.lossWindowMs).toBeNull();
    expect(clean.lossWindow).toBeNull();
    expect(renderDrillReport(clean)).toContain('loss window    none');
  });

  it('counts kill from the moment the drill struck and blackhole from its rules in place, not from Kubernetes noticing', () => {
    const kill = drillReport(input({ fault: 'kill' }));
    expect(kill.failoverMs).toBe(320 + 2 - 250);
    // From the API's confirmation of the deletion when known (recording it is the API's time, not failover).
    expect(drillReport(input({ fault: 'kill', events: { ...events, inEffectAt: T0 + 270 } })).failoverMs).toBe(320 + 2 - 270);
    expect(kill.lossWindow).toEqual({ from: 50, to: 60 });
    expect(kill.timeline).toMatchObject({ start: T0, takenAt: 250, faultAt: 250, lostAt: 295 });
    const hole = drillReport(input({ fault: 'blackhole', events: { ...events, lostAt: null }, faultedStayedReady: true }));
    expect(hole.timeline.lostAt).toBeNull();
    expect(hole.timeline.faultAt).toBe(290); // the last answer before the first loss (300)
    expect(hole.faultedStayedReady).toBe(true);
    expect(report().faultedStayedReady).toBeNull();
    expect(renderDrillReport(hole)).toContain('kept every blackholed backend ready throughout');
    // A blackhole counts from when its rules were in place (the drill's own spawning of them is no failover).
    const applied = drillReport(input({ fault: 'blackhole', events: { ...events, inEffectAt: T0 + 280, lostAt: null } }));
    expect(applied.timeline).toMatchObject({ takenAt: 250, faultAt: 280 });
    expect(applied.failoverMs).toBe(320 + 2 - 280);
    expect(applied.lossWindow).toEqual({ from: 20, to: 30 });
    // Seen in place late: the fault began after the last answer before the first loss (sent at 290).
    const late = drillReport(input({ fault: 'blackhole', events: { ...events, inEffectAt: T0 + 450, lostAt: null } }));
    expect(late.timeline.faultAt).toBe(290);
    expect(late.failoverMs).toBe(320 + 2 - 290);
  });

  it('finds the ejection from the client: the first request after the last one that failed or reached a faulted pod', () => {
    // Faulted pods echo-0/echo-1 answered until 240, then the two failures at 300/310: ejected at 320.
    const r = report();
    expect(r.ejectedAfterMs).toBe(320 - 295);
    expect(r.ejectedFrom).toBe('client');
    // Without failures, the last answer from a faulted pod after the strike (seq 29, t=290) decides.
    const noLoss = stream().map((o) => (o.ok ? o : { ...o, ok: true, cluster: 'east', pod: 'echo-1', error: undefined }));
    expect(drillReport(input({ outcomes: noLoss, fault: 'kill' })).ejectedAfterMs).toBe(320 - 250);
  });

  it('prefers the agent view, and reports null when the datapath never stopped using the faulted backends', () => {
    const fromAgent = drillReport(input({ events: { ...events, agentEjectedAt: T0 + 310 } }));
    expect(fromAgent.ejectedAfterMs).toBe(15);
    expect(fromAgent.ejectedFrom).toBe('agent');
    // Every request during the fault failed: never ejected while it lasted.
    const allFail = stream().map((o) => (o.at >= T0 + 250 && o.at < T0 + 605 ? { ...o, ok: false, cluster: undefined, pod: undefined, error: 'timeout' } : o));
    const r = drillReport(input({ fault: 'blackhole', outcomes: allFail, events: { ...events, lostAt: null, readyAt: events.restoredAt } }));
    expect(r.ejectedAfterMs).toBeNull();
    expect(r.ejectedFrom).toBeNull();
    expect(renderDrillReport(r)).toContain('ejected after  not observed');
  });

  it('splits the stream into phases by when each request was sent', () => {
    const [before, failover, after] = report().phases;
    expect(before).toEqual({ name: 'before', requests: 25, failed: 0, answeredBy: { east: 25 } });
    expect(failover).toEqual({ name: 'failover', requests: 36, failed: 2, answeredBy: { east: 5, west: 29 } });
    expect(after).toEqual({ name: 'after', requests: 29, failed: 0, answeredBy: { east: 28, west: 1 } });
  });

  it('reports null, not zero, when no remote answer ever came', () => {
    const onlyEast = stream().map((o) => ({ ...o, ok: true, cluster: 'east' }));
    const r = drillReport(input({ outcomes: onlyEast, protocol: 'tcp' }));
    expect(r.failoverMs).toBeNull();
    expect(renderDrillReport(r)).toContain('failover       not observed');
  });

  it('with a remote target, fails over away from the remote cluster and back to it', () => {
    // Client in west, east's backends faulted: the west answers are the failover, east's the failback.
    const r = drillReport(input({ cluster: 'west', target: 'remote', affinity: 'remote' }));
    expect(r.failoverMs).toBe(320 + 2 - 295);
    expect(r.failbackMs).toBe(620 + 2 - 605);
    expect(renderDrillReport(r)).toContain('scale: 2 remote backends in east scaled to zero');
  });

  it('renders a table with a column per cluster and for failures', () => {
    const text = renderDrillReport(report());
    expect(text).toMatch(/PHASE\s+REQUESTS\s+east\s+west\s+failed/);
    expect(text).toMatch(/failover\s+36\s+14%\s+81%\s+6%/);
    expect(text).toContain('loss window    10 ms   (first to last failed request, sent 5 ms to 15 ms after the loss)');
  });

  it('buckets the requests for the timeline chart: per answering cluster and failed, every request counted once', () => {
    const { buckets } = report();
    expect(buckets!.bucketMs).toBe(10);
    expect(buckets!.failed.length).toBe(90);
    expect(buckets!.failed[30]).toBe(1);
    expect(buckets!.answered.west![40]).toBe(1);
    expect(buckets!.answered.east![40]).toBe(0);
    const total = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(total(buckets!.answered.east!) + total(buckets!.answered.west!) + total(buckets!.failed)).toBe(90);
  });

  it('widens the buckets of a long drill to about 150, whole multiples of 10 ms', () => {
    const long = Array.from({ length: 3000 }, (_, seq): Outcome => ({ seq, at: T0 + seq * 10, ok: true, ms: 1, cluster: 'east' }));
    const { buckets } = drillReport(input({ outcomes: long }));
    expect(buckets!.bucketMs).toBe(200);
    expect(buckets!.answered.east!.length).toBe(150);
    expect(buckets!.answered.east!.reduce((a, b) => a + b, 0)).toBe(3000);
  });
});

describe('lossSpan and clientEjectedAt', () => {
  const o = (seq: number, ok: boolean, pod?: string): Outcome => ({ seq, at: seq * 10, ok, ms: 1, ...(ok ? { cluster: 'c', pod } : { error: 'timeout' }) });

  it('spans the send times of the first and last failure, in any order', () => {
    expect(lossSpan([o(5, false), o(1, true), o(2, false), o(9, true)])).toEqual({ first: 20, last: 50 });
    expect(lossSpan([o(1, true)])).toBeUndefined();
  });

  it('looks only inside the fault: before it and after the backends are back do not count', () => {
    const outcomes = [o(0, false), o(1, true, 'bad'), o(2, true, 'good'), o(3, false), o(4, true, 'good'), o(5, true, 'good'), o(6, true, 'bad')];
    expect(clientEjectedAt(outcomes, new Set(['bad']), 10, 60)).toBe(40);
    expect(clientEjectedAt(outcomes, new Set(['bad']), 10, 40)).toBeUndefined();
    expect(clientEjectedAt([], new Set(['bad']), 10, 60)).toBeUndefined();
  });
});
