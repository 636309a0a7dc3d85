import { describe, expect, it } from 'vitest';
import type { Backend, GlobalService } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import { OutlierDetector, serviceBackends, type HealthSample } from './outliers.js';

/** Fake datapath counters: what bpf/sock_lb.c would have counted. */
class Counters {
  readonly map = new Map<string, HealthSample>();
  private get(k: string): HealthSample {
    const proto = k.startsWith('UDP') ? 'UDP' : 'TCP';
    let h = this.map.get(k);
    if (!h) this.map.set(k, (h = { proto, successes: 0, consecutive: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0 }));
    return h;
  }
  ok(k: string, n = 1): void {
    const h = this.get(k);
    h.successes += n;
    h.consecutive = 0;
    h.unanswered = 0;
  }
  fail(k: string, n = 1): void {
    this.get(k).consecutive += n;
  }
  send(k: string, at: number): void {
    const h = this.get(k);
    if (h.unanswered === 0) h.firstUnansweredMs = at;
    h.unanswered++;
    h.sent++;
  }
}

const A = 'TCP/10.1.1.2:8080';
const B = 'TCP/10.1.1.3:8080';
const C = 'TCP/10.2.1.2:8080';
const D = 'TCP/10.2.1.3:8080';

/** With a 1 s base ejection (the default is 5 s): the timings below are written for it. */
function setup(members: string[], options = {}) {
  const d = new OutlierDetector({ baseEjectionMs: 1000, ...options });
  const c = new Counters();
  const services = new Map([['default/echo', members]]);
  let now = 1000;
  const poll = (advance = 100) => {
    now += advance;
    return d.observe(c.map, services, now);
  };
  return { d, c, services, poll, at: () => now };
}

describe('outlier detection', () => {
  it('ejects at N consecutive failures; a success in between resets the count', () => {
    const { d, c, poll } = setup([A, B, C, D]);
    c.ok(A);
    c.fail(A, 2);
    expect(poll().changed.size).toBe(0);
    c.ok(A); // reset
    c.fail(A, 2);
    expect(poll().changed.size).toBe(0);
    c.fail(A);
    const r = poll();
    expect([...r.changed]).toEqual([A]);
    expect(r.events).toEqual([expect.objectContaining({ kind: 'ejected', backend: A, failures: 3, ejections: 1, services: ['default/echo'] })]);
    expect([...d.ejectedKeys()]).toEqual([A]);
    expect(d.failuresTotal).toBe(5);
  });

  it('returns after the ejection time; on probation one failure ejects again for longer; a success clears it', () => {
    const { d, c, poll, at } = setup([A, B], { baseEjectionMs: 1000, maxEjectionMs: 2500 });
    c.fail(A, 3);
    const first = poll().events[0]!;
    expect(first).toMatchObject({ kind: 'ejected', ejections: 1 });
    expect(first.kind === 'ejected' && first.untilMs - first.sinceMs).toBe(1000);
    for (let i = 0; i < 9; i++) expect(poll().changed.size).toBe(0);
    const back = poll();
    expect(back.events).toEqual([expect.objectContaining({ kind: 'returned', backend: A, ejectedMs: 1000 })]);
    expect(d.ejectedKeys().size).toBe(0);
    // Old failures (still 3 in a row) do not eject it again by themselves.
    expect(poll().changed.size).toBe(0);
    c.fail(A); // one new failure on probation
    const again = poll().events[0]!;
    expect(again).toMatchObject({ kind: 'ejected', ejections: 2 });
    expect(again.kind === 'ejected' && again.untilMs - again.sinceMs).toBe(2000);
    poll(2000); // back
    c.fail(A);
    const third = poll().events[0]!;
    expect(third.kind === 'ejected' && third.untilMs - third.sinceMs).toBe(2500); // capped
    poll(2500); // back again
    c.ok(A, 5); // recovered: probation over
    poll();
    c.fail(A, 2);
    expect(poll().changed.size).toBe(0); // needs N again
    c.ok(A);
    poll(3000); // healthy for maxEjectionMs: the multiplier starts over
    c.fail(A, 3);
    const fresh = poll().events[0]!;
    expect(fresh).toMatchObject({ kind: 'ejected', ejections: 1 });
    expect(at()).toBeGreaterThan(0);
  });

  it('never ejects more than the maximum share, nor the last backend', () => {
    const four = setup([A, B, C, D]);
    for (const k of [A, B, C]) four.c.fail(k, 3);
    const r = four.poll();
    expect([...r.changed].sort()).toEqual([A, B]);
    expect(r.events.filter((e) => e.kind === 'held')).toEqual([expect.objectContaining({ backend: C, service: 'default/echo' })]);
    expect(four.poll().events).toEqual([]); // held is said once per streak
    // A lone backend is never ejected, even at 100%.
    const one = setup([A], { maxEjectedPercent: 100 });
    one.c.fail(A, 10);
    expect(one.poll().changed.size).toBe(0);
    const two = setup([A, B], { maxEjectedPercent: 100 });
    two.c.fail(A, 3);
    two.c.fail(B, 3);
    expect(two.poll().changed.size).toBe(1);
    expect(two.d.ejectedKeys().size).toBe(1);
  });

  it('a held backend is ejected once another returns and makes room', () => {
    const { d, c, poll } = setup([A, B], { baseEjectionMs: 500 });
    c.fail(A, 3);
    poll();
    c.fail(B, 3);
    expect(poll().events).toEqual([expect.objectContaining({ kind: 'held', backend: B })]);
    const r = poll(500); // A returns, and that makes room for B
    expect(r.events).toEqual([expect.objectContaining({ kind: 'returned', backend: A }), expect.objectContaining({ kind: 'ejected', backend: B })]);
    expect([...d.ejectedKeys()]).toEqual([B]);
  });

  it('UDP: datagrams unanswered for the window count as failures, only from a backend that answered before', () => {
    const U = 'UDP/10.1.1.2:53';
    const V = 'UDP/10.1.1.3:53';
    const { d, c, poll, at } = setup([U, V, 'UDP/10.1.1.4:53'], { udpAnswerWindowMs: 300, maxEjectedPercent: 100 });
    // One-way: never answered, never judged.
    for (let i = 0; i < 10; i++) {
      c.send(V, at());
      poll();
    }
    expect(d.ejectedKeys().size).toBe(0);
    c.send(U, at());
    c.ok(U);
    poll();
    for (let i = 0; i < 3; i++) c.send(U, at()); // unanswered from here
    expect(poll().changed.size).toBe(0); // 100 ms
    expect(poll().changed.size).toBe(0); // 200 ms
    const r = poll(); // 300 ms: the window
    expect([...r.changed]).toEqual([U]);
    expect(r.events[0]).toMatchObject({ kind: 'ejected', failures: 3 });
    // Back on probation: its old silence is not held against it; a datagram answered in time clears it.
    expect(poll(1000).events).toEqual([expect.objectContaining({ kind: 'returned', backend: U })]);
    c.send(U, at());
    expect(poll().changed.size).toBe(0);
    c.ok(U);
    expect(poll().changed.size).toBe(0);
    // Silent again: on probation one datagram unanswered for the window would do; here it left probation with
    // that answer, so it takes three again.
    c.send(U, at());
    poll();
    poll();
    expect(poll().changed.size).toBe(0); // 1 unanswered for 300 ms: not enough
    c.send(U, at());
    c.send(U, at());
    expect([...poll().changed]).toEqual([U]);
  });

  it('UDP on probation: one datagram unanswered for the window ejects it again', () => {
    const U = 'UDP/10.1.1.2:53';
    const { c, poll, at } = setup([U, 'UDP/10.1.1.3:53'], { udpAnswerWindowMs: 300 });
    c.send(U, at());
    c.ok(U);
    poll();
    for (let i = 0; i < 3; i++) c.send(U, at());
    poll();
    poll();
    expect(poll().events[0]).toMatchObject({ kind: 'ejected' });
    poll(1000); // back
    c.send(U, at());
    poll(); // first seen unanswered here
    poll();
    poll();
    expect(poll().events[0]).toMatchObject({ kind: 'ejected', ejections: 2 });
  });

  it('forgets a backend its services no longer have (and reports it unejected)', () => {
    const { d, c, services, poll } = setup([A, B]);
    c.fail(A, 3);
    poll();
    services.set('default/echo', [B]);
    expect([...poll().changed]).toEqual([A]);
    expect(d.ejectedKeys().size).toBe(0);
  });

  it('0 consecutive failures turns ejection off', () => {
    const { d, c, poll } = setup([A, B], { consecutiveFailures: 0 });
    c.fail(A, 50);
    poll();
    expect(d.ejectedKeys().size).toBe(0);
    expect(d.failuresTotal).toBe(50);
  });
});

describe('serviceBackends', () => {
  const be = (ip: string, ready = true): Backend => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' }, dns: { port: 53, protocol: 'UDP' } }, ready, serving: ready, terminating: false });
  const svc = (cluster: string, backends: Backend[]): GlobalService => ({
    cluster,
    namespace: 'default',
    name: 'echo',
    shared: true,
    affinity: 'local',
    clusterIps: ['100.64.0.10'],
    ports: [
      { name: 'http', port: 80, protocol: 'TCP' },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
    backends,
  });
  it('lists the ready backends of every cluster per port, whatever the affinity; stale ones only as a last resort', () => {
    const m = (westStale: boolean): MergedService => ({
      namespace: 'default',
      name: 'echo',
      global: true,
      affinity: 'local',
      clusters: [
        { cluster: 'east', local: true, stale: false, service: svc('east', [be('10.1.1.2'), be('10.1.1.3', false)]) },
        { cluster: 'west', local: false, stale: westStale, service: svc('west', [be('10.2.1.2')]) },
      ],
    });
    expect(serviceBackends(m(false))).toEqual(['TCP/10.1.1.2:8080', 'TCP/10.2.1.2:8080', 'UDP/10.1.1.2:53', 'UDP/10.2.1.2:53']);
    expect(serviceBackends(m(true))).toEqual(['TCP/10.1.1.2:8080', 'UDP/10.1.1.2:53']);
  });
});
