// Outlier detection over what the node's sockets experienced (skein_health, counted by bpf/sock_lb.c): a
// backend with `consecutiveFailures` failures in a row leaves the active set of its services for an ejection
// time that grows with each ejection (base × times ejected, capped), then returns on probation, where a
// single new failure ejects it again and a success clears it. A service never has more than
// `maxEjectedPercent` of its usable backends ejected, and never its last one: detection alone never empties
// a service. Pure: the agent hands in samples, the services' backends and the time.
//
// What a failure is: TCP, a SYN retransmission timeout or a connect that ended in SYN_SENT (refused, reset,
// given up), counted in the kernel with "failures since the last success". UDP has no handshake, so a
// backend fails when datagrams were sent to it for at least `udpAnswerWindowMs` with none back since (the
// unanswered datagrams then count as consecutive failures); only a backend that has answered this node
// before is judged, so one-way UDP protocols (syslog, metrics) are never ejected for their silence.
import type { BackendHealth } from '../socket-lb.js';
import type { Backend } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';

export interface OutlierOptions {
  /** Failures in a row that eject a backend; 0 turns ejection off (health is still counted). */
  consecutiveFailures: number;
  /** The first ejection's length; the n-th lasts n × this, up to maxEjectionMs. */
  baseEjectionMs: number;
  maxEjectionMs: number;
  /** At most this share of a service's usable backends is ejected at once (and never all of them). */
  maxEjectedPercent: number;
  /** UDP: how long datagrams may go unanswered before they count as failures. */
  udpAnswerWindowMs: number;
}

/**
 * Base 5 s, not Envoy's 30 s: a brief fault (a restart, a GC pause, a flapping link) should not cost half a
 * minute of capacity. Not 1 s either: a backend returns on probation, and a still-dead one then takes the
 * connects of one SYN RTO (200 ms) before a failure ejects it again. Measured with drills on the test bed, a
 * 1 s base put such bursts of loss at 1 s, 3 s, 6 s, ... into every blackhole longer than a second; at 5 s
 * a fault as long as a drill's is over before the first return. The n-th ejection lasts n × 5 s, up to 30 s.
 */
export const OUTLIER_DEFAULTS: OutlierOptions = { consecutiveFailures: 3, baseEjectionMs: 5000, maxEjectionMs: 30_000, maxEjectedPercent: 50, udpAnswerWindowMs: 300 };

export type HealthSample = Pick<BackendHealth, 'proto' | 'successes' | 'consecutive' | 'sent' | 'unanswered' | 'firstUnansweredMs'>;

export interface Ejection {
  /** PROTO/ip:port */
  backend: string;
  services: string[];
  sinceMs: number;
  untilMs: number;
  /** Consecutive failures that ejected it. */
  failures: number;
  /** Times ejected (the multiplier of the base ejection time; decays after a healthy maxEjectionMs). */
  ejections: number;
}

export type OutlierEvent =
  | ({ kind: 'ejected' } & Ejection)
  | { kind: 'returned'; backend: string; services: string[]; ejectedMs: number; ejections: number }
  /** Would be ejected, but its services already have as many ejected as they may (logged once per streak). */
  | { kind: 'held'; backend: string; services: string[]; failures: number; service: string };

interface State {
  /** The sample's cumulative successes at the last poll. */
  successes: number;
  /** Consecutive failures as judged at the last poll. */
  consecutive: number;
  /** Failure events seen (the metric). */
  failures: number;
  ejections: number;
  ejected?: { sinceMs: number; untilMs: number; failures: number };
  /** Back from an ejection: `base` is the consecutive count it returned with (old sockets still fail). */
  probation?: { base: number };
  returnedMs?: number;
  held?: boolean;
  /** UDP: unanswered datagrams from before this moment (the agent's clock) are not held against it again. */
  udpReset?: { atMs: number; sent: number; firstSendMs?: number };
}

/** The key of a backend's health: PROTO/ip:port. */
const keyOf = (proto: string, ip: string, port: number) => `${proto}/${ip}:${port}`;

function usable(m: MergedService): Backend[] {
  const all = m.clusters.flatMap((c) => c.service.backends.map((b) => ({ b, stale: c.stale })));
  for (const ok of [(t: (typeof all)[number]) => t.b.ready && !t.stale, (t: (typeof all)[number]) => t.b.ready, (t: (typeof all)[number]) => t.b.serving && t.b.terminating]) {
    const tier = all.filter(ok);
    if (tier.length) return tier.map((t) => t.b);
  }
  return [];
}

/**
 * A service's usable backends as health keys (PROTO/ip:port per local port): the best tier of readiness over
 * every cluster, whatever the affinity. Ejection shares are counted against these.
 */
export function serviceBackends(m: MergedService): string[] {
  const local = m.clusters.find((c) => c.local);
  if (!local) return [];
  const out = new Set<string>();
  for (const b of usable(m)) {
    for (const port of local.service.ports) {
      const p = b.ports[port.name];
      if (p && p.protocol === port.protocol && port.protocol !== 'SCTP') out.add(keyOf(port.protocol, b.ip, p.port));
    }
  }
  return [...out].sort();
}

export class OutlierDetector {
  private readonly state = new Map<string, State>();
  private readonly ejectedSet = new Set<string>();
  /** Failure events and ejections since start (metrics). */
  failuresTotal = 0;
  ejectionsTotal = 0;
  readonly options: OutlierOptions;

  constructor(options: Partial<OutlierOptions> = {}) {
    this.options = { ...OUTLIER_DEFAULTS, ...options };
  }

  /** The backends ejected now (PROTO/ip:port): the policy leaves them out of active sets. */
  ejectedKeys(): ReadonlySet<string> {
    return this.ejectedSet;
  }

  ejections(services: ReadonlyMap<string, readonly string[]> = new Map()): Ejection[] {
    const of = servicesOf(services);
    return [...this.state]
      .filter(([k]) => this.ejectedSet.has(k))
      .map(([backend, s]) => ({ backend, services: of.get(backend) ?? [], sinceMs: s.ejected!.sinceMs, untilMs: s.ejected!.untilMs, failures: s.ejected!.failures, ejections: s.ejections }))
      .sort((a, b) => a.backend.localeCompare(b.backend));
  }

  /** Failure events seen per backend (for /v1/programmed). */
  failureCounts(): Map<string, number> {
    return new Map([...this.state].filter(([, s]) => s.failures > 0).map(([k, s]) => [k, s.failures]));
  }

  /**
   * One poll: the datapath's counters by backend key, each service's usable backends (serviceBackends), and
   * the time in ms (the clock of the samples' timestamps: CLOCK_MONOTONIC). Returns the backends whose
   * ejection changed (their services need reprogramming) and what happened.
   */
  observe(samples: ReadonlyMap<string, HealthSample>, services: ReadonlyMap<string, readonly string[]>, nowMs: number): { changed: Set<string>; events: OutlierEvent[] } {
    const of = servicesOf(services);
    const changed = new Set<string>();
    const events: OutlierEvent[] = [];
    // A backend no service has any more is forgotten (its services were reprogrammed without it anyway).
    for (const k of [...this.state.keys()]) {
      if (of.has(k)) continue;
      this.state.delete(k);
      if (this.ejectedSet.delete(k)) changed.add(k);
    }
    // The ejected first: one that returns makes room for another held by the share in the same poll.
    for (const [key, svcs] of [...of].sort(([a], [b]) => Number(this.ejectedSet.has(b)) - Number(this.ejectedSet.has(a)))) {
      const h = samples.get(key);
      let st = this.state.get(key);
      if (!h && !st) continue;
      if (!st) {
        st = { successes: h!.successes, consecutive: 0, failures: 0, ejections: 0 };
        this.state.set(key, st);
      }
      // A recreated entry (agent cleanup, LRU) starts its counters over.
      if (h && h.successes < st.successes) st.successes = 0;
      const advanced = !!h && h.successes > st.successes;
      const consecutive = h ? this.judge(st, h, nowMs) : st.consecutive;
      const fresh = advanced ? consecutive : Math.max(0, consecutive - st.consecutive);
      st.failures += fresh;
      this.failuresTotal += fresh;
      if (h) st.successes = h.successes;
      st.consecutive = consecutive;

      if (st.ejected) {
        if (nowMs < st.ejected.untilMs) continue;
        const ejectedMs = nowMs - st.ejected.sinceMs;
        st.ejected = undefined;
        this.ejectedSet.delete(key);
        st.returnedMs = nowMs;
        if (h?.proto === 'UDP') st.udpReset = { atMs: nowMs, sent: h.sent };
        st.probation = { base: h ? this.judge(st, h, nowMs) : 0 };
        st.consecutive = st.probation.base;
        changed.add(key);
        events.push({ kind: 'returned', backend: key, services: svcs, ejectedMs, ejections: st.ejections });
        continue;
      }
      const n = this.options.consecutiveFailures;
      let trip = false;
      if (st.probation) {
        if (advanced ? consecutive > 0 : consecutive > st.probation.base) trip = n > 0;
        else if (advanced) st.probation = undefined;
      } else trip = n > 0 && consecutive >= n;
      if (!trip) {
        st.held = false;
        // Healthy for as long as the longest ejection: its next ejection starts from the base again.
        if (consecutive === 0 && st.returnedMs !== undefined && nowMs - st.returnedMs >= this.options.maxEjectionMs) {
          st.ejections = 0;
          st.probation = undefined;
          st.returnedMs = undefined;
        }
        continue;
      }
      const full = svcs.find((s) => !this.room(services.get(s) ?? []));
      if (full) {
        if (!st.held) events.push({ kind: 'held', backend: key, services: svcs, failures: consecutive, service: full });
        st.held = true;
        continue;
      }
      st.held = false;
      st.probation = undefined;
      st.ejections++;
      this.ejectionsTotal++;
      const forMs = Math.min(this.options.baseEjectionMs * st.ejections, this.options.maxEjectionMs);
      st.ejected = { sinceMs: nowMs, untilMs: nowMs + forMs, failures: consecutive };
      this.ejectedSet.add(key);
      changed.add(key);
      events.push({ kind: 'ejected', backend: key, services: svcs, sinceMs: nowMs, untilMs: nowMs + forMs, failures: consecutive, ejections: st.ejections });
    }
    return { changed, events };
  }

  /** Whether one more of `members` may be ejected: within the share, and never the last one. */
  private room(members: readonly string[]): boolean {
    const ejected = members.filter((k) => this.ejectedSet.has(k)).length;
    const limit = Math.min(members.length - 1, Math.floor((members.length * this.options.maxEjectedPercent) / 100));
    return ejected + 1 <= limit;
  }

  /** The backend's consecutive failures now. */
  private judge(st: State, h: HealthSample, nowMs: number): number {
    if (h.proto === 'TCP') return h.consecutive;
    // Never answered this node: maybe a one-way protocol; not judged.
    if (h.successes === 0 || h.unanswered === 0) {
      if (h.unanswered === 0) st.udpReset = undefined;
      return 0;
    }
    let since = h.firstUnansweredMs;
    let count = h.unanswered;
    const r = st.udpReset;
    if (r && h.firstUnansweredMs < r.atMs) {
      // Unanswered since before it returned: only what was sent since counts, from when it was first seen.
      count = h.sent - r.sent;
      if (count <= 0) return 0;
      r.firstSendMs ??= nowMs;
      since = r.firstSendMs;
    } else st.udpReset = undefined;
    return nowMs - since >= this.options.udpAnswerWindowMs ? count : 0;
  }
}

function servicesOf(services: ReadonlyMap<string, readonly string[]>): Map<string, string[]> {
  const of = new Map<string, string[]>();
  for (const [id, keys] of services) for (const k of keys) of.set(k, [...(of.get(k) ?? []), id]);
  return of;
}
