import { describe, expect, it } from 'vitest';
import { DRILL_HISTORY, type DrillReport } from '../../mesh/drill-report.js';
import { withDrill } from './history.js';

const drill = (service: string, pods = 0): DrillReport => ({
  service, cluster: 'east', affinity: 'local', fault: 'scale', target: 'local', faulted: { cluster: 'east', pods: Array.from({ length: pods }, (_, i) => `echo-${'x'.repeat(200)}-${i}`) },
  address: '1.2.3.4:80', protocol: 'http', intervalMs: 20, requests: 1, requestsLost: 0, failoverMs: 1, failbackMs: 1, lossWindowMs: null, lossWindow: null,
  ejectedAfterMs: null, ejectedFrom: null, faultedStayedReady: null, lostErrors: {}, timeline: { start: 1, takenAt: 1, faultAt: 1, lostAt: null, restoredAt: 1, readyAt: 1, end: 1 }, phases: [],
});

describe('the drill history', () => {
  it('keeps the newest drills first, at most maxDrills', () => {
    let h: DrillReport[] = [];
    for (let i = 0; i < DRILL_HISTORY.maxDrills + 3; i++) h = withDrill(h, drill(`d${i}`));
    expect(h.map((d) => d.service)).toEqual(Array.from({ length: DRILL_HISTORY.maxDrills }, (_, i) => `d${DRILL_HISTORY.maxDrills + 2 - i}`));
  });

  it('drops the oldest until the ConfigMap value fits its byte bound, never the new one', () => {
    let h: DrillReport[] = [];
    for (let i = 0; i < 5; i++) h = withDrill(h, drill(`big${i}`, 600)); // ~130 KiB each
    expect(Buffer.byteLength(JSON.stringify(h))).toBeLessThanOrEqual(DRILL_HISTORY.maxBytes);
    expect(h[0]!.service).toBe('big4');
    expect(h.length).toBeLessThan(5);
  });
});
