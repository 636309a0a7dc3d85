import { describe, expect, it } from 'vitest';
import type { Backend, GlobalService } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import { OutlierDetector, serviceBackends, type HealthSample, type ProbeOutcome } from './outliers.js';

/** Fake datapath counters: what bpf/sock_lb.c would have counted. */
class Counters {
  readonly map = new Map<string, HealthSample>();
  /** The clock of the timestamps (the test's). */
  constructor(private readonly now: () => number = () => 0) {}
  private get(k: string): HealthSample {
    const proto = k.startsWith('UDP') ? 'UDP' : 'TCP';
    let h = this.map.get(k);
    if (!h) this.map.set(k, (h = { proto, successes: 0, consecutive: 0, lastSuccessMs: 0, lastFailureMs: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0 }));
    return h;
  }
  ok(k: string, n = 1): void {
    const h = this.get(k);
    h.successes += n;
    h.consecutive = 0;
    h.unanswered = 0;
    h.lastSuccessMs = this.now();
  }
  fail(k: string, n = 1): void {
    const h = this.get(k);
    h.consecutive += n;
    h.lastFailureMs = this.now();
  }
  /** A connect the datapath counted as refused (ended in SYN_SENT before any retransmission): also a failure. */
  refuse(k: string): void {
    const h = this.get(k);
    this.fail(k);
    h.refused = (h.refused ?? 0) + 1;
    h.lastRefusedMs = this.now();
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
  let now = 1000;
  const c = new Counters(() => now);
  const services = new Map([['default/echo', members]]);
  const poll = (advance = 100) => {
    now += advance;
    return d.observe(c.map, services, now);
  };
  return { d, c, services, poll, at: () => now };
}

describe('outlier detection', () => {
  it('a refused connect ejects at once (nothing listens: proof, not a guess); a success after it does not', () => {
    const { c, poll } = setup([A, B, C, D]);
    c.ok(A);
    c.ok(B);
    poll();
    c.refuse(A);
    const { changed, events } = poll();
    expect([...changed]).toEqual([A]);
    expect(events).toMatchObject([{ kind: 'ejected', backend: A, refused: true, failures: 1 }]);
    // Refused, then a client connect succeeded before the poll looked: not ejected (it answers again).
    c.refuse(B);
    c.ok(B);
    expect(poll().changed.size).toBe(0);
    // A timeout is still one failure of three.
    c.fail(B);
    expect(poll().changed.size).toBe(0);
  });

  it('a refusal ejects only within the share, and never the last backend', () => {
    const { d, c, poll } = setup([A, B]);
    c.ok(A);
    c.ok(B);
    poll();
    c.refuse(A);
    c.refuse(B);
    const { events } = poll();
    expect(events.filter((e) => e.kind === 'ejected')).toHaveLength(1);
    expect(d.ejectedKeys().size).toBe(1);
  });

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
    poll();
    poll(2000); // healthy for two base ejection times: two ejections fewer count (of 3)
    c.fail(A, 3);
    const decayed = poll().events[0]!;
    expect(decayed).toMatchObject({ kind: 'ejected', ejections: 2 });
    poll(2000); // back
    c.ok(A);
    poll();
    poll(3000); // healthy long enough: the multiplier is back to nothing
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

describe('outlier detection with active probes (refusals)', () => {
  it('a refusal after a probe started counts even when that probe\'s success is read later (a busy node)', () => {
    const { d, c, poll, at, services } = setup([A, B, C, D]);
    for (const k of [A, B, C, D]) c.ok(k);
    poll();
    const started = at();
    d.stalled(new Map([[A, started - 150]]), services, started);
    d.probeStarted(A, started);
    poll(20);
    c.refuse(A); // the process died after the probe's connect was accepted...
    d.probeEnded(A, 'ok', started, at() + 30); // ...whose success is read only later, before the next look
    const { events } = poll(40);
    expect(events).toMatchObject([{ kind: 'ejected', backend: A, refused: true }]);
  });

  it('a refused probe ejects at once; a probe that only timed out is one failure', () => {
    const { d, c, poll, at } = setup([A, B, C, D]);
    c.ok(A);
    c.ok(B);
    poll();
    c.fail(A); // a SYN timeout: probes are wanted
    poll();
    const wanted = d.probesWanted(at());
    expect(wanted.get(A)).toBe(2);
    d.probeStarted(A, at());
    d.probeEnded(A, 'refused', at(), at() + 1);
    const { events } = poll();
    expect(events).toMatchObject([{ kind: 'ejected', backend: A, refused: true }]);
  });
});

describe('outlier detection: stalled connections', () => {
  const domain = new Map<string, string>([...[A, B].map((k) => [k, 'east'] as const), ...[C, D].map((k) => [k, 'west'] as const)]);

  it('a stall makes the backend and its siblings in the same cluster suspects; failed probes eject them, a stall alone never does', () => {
    const { d, c, poll, at, services } = setup([A, B, C, D]);
    for (const k of [A, B, C, D]) c.ok(k);
    poll();
    expect(d.stalled(new Map([[A, at() - 150]]), services, at(), domain)).toBe(true);
    expect(poll().changed.size).toBe(0); // a slow answer is not a failure
    const wanted = d.probesWanted(at());
    expect([...wanted]).toEqual([
      [A, 3],
      [B, 3],
    ]);
    for (const [k, n] of wanted) for (let i = 0; i < n; i++) d.probeStarted(k, at());
    for (const [k, n] of wanted) for (let i = 0; i < n; i++) d.probeEnded(k, 'failed', at(), at() + 200);
    const { events } = poll(200);
    expect(events.filter((e) => e.kind === 'ejected').map((e) => e.backend)).toEqual([A, B]);
  });

  it('a backend a probe reached after the stalled request was sent is not probed again for that stall (its application is slow); a later stall is new evidence', () => {
    const { d, c, poll, at, services } = setup([A, B, C, D]);
    for (const k of [A, B, C, D]) c.ok(k);
    poll();
    const sent = at() - 150;
    d.stalled(new Map([[A, sent]]), services, at(), domain);
    for (const [k, n] of d.probesWanted(at())) {
      for (let i = 0; i < n; i++) {
        d.probeStarted(k, at());
        d.probeEnded(k, 'ok', at(), at() + 1);
      }
    }
    poll(1000);
    // However long that connection stays stalled.
    expect(d.stalled(new Map([[A, sent]]), services, at(), domain)).toBe(false);
    expect(d.probesWanted(at()).size).toBe(0);
    expect(d.stalled(new Map([[A, at() - 150]]), services, at(), domain)).toBe(true);
    // Its sibling too: the probe that found it answering came before this evidence.
    expect([...d.probesWanted(at()).keys()]).toEqual([A, B]);
  });

  it('a sibling probed fine before the fault is probed again when a failure comes (an earlier probe says nothing about a later fault)', () => {
    const { d, c, poll, at, services } = setup([A, B, C, D]);
    for (const k of [A, B, C, D]) c.ok(k);
    poll();
    d.probeStarted(B, at());
    d.probeEnded(B, 'ok', at(), at() + 5);
    poll(400);
    c.fail(A);
    const obs = d.observe(c.map, services, at() + 100, domain);
    expect(obs.changed.size).toBe(0);
    expect([...d.probesWanted(at() + 100).keys()]).toEqual([A, B]);
  });

  it('a backend of no service, or one already ejected, is not probed for a stall', () => {
    const { d, c, poll, at, services } = setup([A, B, C, D]);
    c.ok(A);
    c.fail(B, 3);
    poll();
    expect(d.ejectedKeys().has(B)).toBe(true);
    expect(d.stalled(new Map([['TCP/10.9.9.9:80', at()], [B, at()]]), services, at(), domain)).toBe(false);
  });
});

describe('outlier detection with active probes', () => {
  /** Runs what probesWanted asks for, each probe ending as `outcome` says, `ms` later. */
  function probeAll(d: OutlierDetector, at: number, outcome: (key: string) => boolean | ProbeOutcome, ms = 200): string[] {
    const started: string[] = [];
    for (const [key, n] of d.probesWanted(at)) {
      for (let i = 0; i < n; i++) {
        d.probeStarted(key, at);
        started.push(key);
      }
    }
    for (const key of started) {
      const o = outcome(key);
      d.probeEnded(key, o === true ? 'ok' : o === false ? 'failed' : o, at, at + ms);
    }
    return started;
  }

  it('a failing backend gets the probes it lacks to be judged; their failures eject it (ejected one probe timeout after its first failure)', () => {
    const { d, c, poll, at } = setup([A, B, C, D]);
    c.ok(A);
    poll();
    expect(d.probesWanted(at()).size).toBe(0); // nothing failing: nothing probed
    c.fail(A); // one client connect timed out
    expect(poll().changed.size).toBe(0);
    expect(probeAll(d, at(), () => false)).toEqual([A, A]); // 3 - 1 at once
    const r = poll(200);
    expect([...r.changed]).toEqual([A]);
    expect(r.events[0]).toMatchObject({ kind: 'ejected', failures: 3 });
    expect(d.failuresTotal).toBe(3);
  });

  it('a probe that connects ends the probing but never clears what the clients saw', () => {
    const { d, c, poll, at } = setup([A, B, C, D]);
    c.ok(A);
    c.fail(A, 2);
    poll();
    expect(probeAll(d, at(), () => true)).toEqual([A]);
    poll();
    expect(d.probesWanted(at()).size).toBe(0); // answered the node: no more probes for this streak
    c.fail(A); // the clients still fail: the third in a row ejects it
    expect([...poll().changed]).toEqual([A]);
  });

  it('a client success between a failed probe and the judgement resets it', () => {
    const { d, c, poll, at } = setup([A, B, C, D]);
    c.fail(A);
    poll();
    probeAll(d, at(), (k) => k !== A, 50); // both fail
    poll(10);
    c.ok(A); // after the probes ended
    poll(100);
    c.fail(A);
    expect(poll().changed.size).toBe(0); // 1 in a row, not 4
  });

  it('the siblings of a failing backend in the same cluster are probed, each judged on its own failures', () => {
    const { d, c, services, at } = setup([A, B, C, D]);
    const domains = new Map([
      [A, 'east'],
      [B, 'east'],
      [C, 'west'],
      [D, 'west'],
    ]);
    c.ok(A);
    c.ok(B);
    d.observe(c.map, services, at(), domains);
    c.fail(A);
    d.observe(c.map, services, at() + 10, domains);
    const wanted = d.probesWanted(at() + 10);
    expect(Object.fromEntries(wanted)).toEqual({ [A]: 2, [B]: 3 }); // west is not suspected
    probeAll(d, at() + 10, () => false);
    const r = d.observe(c.map, services, at() + 300, domains);
    expect([...r.changed].sort()).toEqual([A, B]);
    // A sibling that answers is left alone (and not suspected again right away).
    const s = setup([A, B, C, D]);
    s.c.ok(B);
    s.c.fail(A);
    s.d.observe(s.c.map, s.services, s.at(), domains);
    probeAll(s.d, s.at(), (k) => k === B);
    const t = s.d.observe(s.c.map, s.services, s.at() + 300, domains);
    expect([...t.changed]).toEqual([A]);
    expect([...s.d.probesWanted(s.at() + 300).keys()]).toEqual([A]); // the ejected one's recovery probe; B answered
  });

  it('an ejected backend is probed every recoveryProbeMs and returns early once one connects, on probation', () => {
    const { d, c, poll, at } = setup([A, B], { baseEjectionMs: 5000, recoveryProbeMs: 250 });
    c.fail(A, 3);
    expect(poll().events[0]).toMatchObject({ kind: 'ejected' });
    expect(probeAll(d, at(), () => false)).toEqual([A]);
    poll(100);
    expect(d.probesWanted(at()).size).toBe(0); // 250 ms apart
    poll(200);
    expect(probeAll(d, at(), () => true)).toEqual([A]);
    const back = poll();
    expect(back.events).toEqual([expect.objectContaining({ kind: 'returned', backend: A, early: true })]);
    c.fail(A); // on probation: one failure ejects it again, for longer
    expect(poll().events[0]).toMatchObject({ kind: 'ejected', ejections: 2 });
  });

  it('a held backend is not probed; recoveryProbeMs 0 turns probes off', () => {
    const { d, c, poll, at } = setup([A, B]);
    c.fail(A, 3);
    poll();
    c.fail(B, 1);
    poll();
    probeAll(d, at(), () => false);
    expect(poll(200).events).toEqual([expect.objectContaining({ kind: 'held', backend: B })]);
    expect([...d.probesWanted(at() + 100).keys()]).toEqual([A]); // the ejected one's recovery probe only
    const off = setup([A, B, C, D], { recoveryProbeMs: 0 });
    off.c.fail(A);
    off.poll();
    expect(off.d.probesWanted(off.at()).size).toBe(0);
  });

  it('past the share, ejects a failing backend only while another one is proven to answer; probes the unproven to find out', () => {
    // Two local backends (A, B) die, one remote (C) is left: the share (50 % of 3) allows one ejection.
    const { d, c, poll, at } = setup([A, B, C]);
    c.fail(A, 3);
    c.fail(B, 3);
    const r = poll();
    expect([...r.changed]).toEqual([A]);
    expect(r.events).toContainEqual(expect.objectContaining({ kind: 'held', backend: B }));
    // C never answered this node: it is probed; its probe fails, so B stays held (maybe this node is the trouble).
    expect(Object.fromEntries(d.probesWanted(at()))).toMatchObject({ [C]: 3 });
    probeAll(d, at(), () => false, 10); // A's recovery probe too
    expect(poll(50).changed.size).toBe(0);
    // C answers a client (or a probe): B goes too, C is never ejected (the last one).
    c.ok(C);
    expect([...poll().changed]).toEqual([B]);
    c.fail(C, 5);
    poll();
    expect([...d.ejectedKeys()].sort()).toEqual([A, B]);
  });
});
