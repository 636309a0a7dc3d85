// Outlier detection over what the node's sockets experienced (skein_health, counted by bpf/sock_lb.c): a
// backend with `consecutiveFailures` failures in a row leaves the active set of its services for an ejection
// time that grows with each ejection (base × times ejected, capped), then returns on probation, where a
// single new failure ejects it again and a success clears it. A service never has more than
// `maxEjectedPercent` of its usable backends ejected, and never its last one: detection alone never empties
// a service. Pure: the agent hands in samples, the services' backends and the time.
//
// What a failure is: TCP, a SYN retransmission timeout or a connect that ended in SYN_SENT (refused, reset,
// given up), counted in the kernel with "failures since the last success". A refused connect (ended before any
// retransmission: the backend's host answered that nothing listens) or a refused probe is proof rather than a
// guess: it ejects at once, without waiting for more failures (the share rules still apply). UDP has no handshake, so a
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
  /** Active probes (TCP): 0 turns them off. How often an ejected backend is probed for an early return. */
  recoveryProbeMs: number;
  /**
   * A sibling found answering by a probe at most this long before the evidence against its failing sibling (the
   * failure; when a stalled request was sent) is not probed again for it; nor is a member of a full service
   * probed fine this long ago.
   */
  suspectCooldownMs: number;
  /**
   * Past maxEjectedPercent a backend is still ejected while another member has answered this node (a client
   * connect or a probe) within this long; never the last one.
   */
  provenMs: number;
  /**
   * A connection that sent the backend data but got no byte back for this long makes the backend and its
   * siblings suspects (probed; the probes decide). Read from the datapath (skein_pending); 0: off.
   */
  stallMs: number;
}

/**
 * Base 5 s, not Envoy's 30 s: a brief fault (a restart, a GC pause, a flapping link) should not cost half a
 * minute of capacity. Not 1 s either: a backend returns on probation, and a still-dead one then takes the
 * connects of one SYN RTO (200 ms) before a failure ejects it again. Measured with drills on the test bed, a
 * 1 s base put such bursts of loss at 1 s, 3 s, 6 s, ... into every blackhole longer than a second; at 5 s
 * a fault as long as a drill's is over before the first return. The n-th ejection lasts n × 5 s, up to 30 s.
 */
export const OUTLIER_DEFAULTS: OutlierOptions = { consecutiveFailures: 3, baseEjectionMs: 5000, maxEjectionMs: 30_000, maxEjectedPercent: 50, udpAnswerWindowMs: 300, recoveryProbeMs: 250, suspectCooldownMs: 250, provenMs: 10_000, stallMs: 150 };

export type HealthSample = Pick<BackendHealth, 'proto' | 'successes' | 'consecutive' | 'lastSuccessMs' | 'lastFailureMs' | 'sent' | 'unanswered' | 'firstUnansweredMs'> & Partial<Pick<BackendHealth, 'refused' | 'lastRefusedMs'>>;

/** How a probe ended: connected, refused (a reset: nothing listens, proof), or failed otherwise (a timeout). */
export type ProbeOutcome = 'ok' | 'refused' | 'failed';

export interface Ejection {
  /** PROTO/ip:port */
  backend: string;
  services: string[];
  sinceMs: number;
  untilMs: number;
  /** Consecutive failures that ejected it. */
  failures: number;
  /** Times ejected (the multiplier of the base ejection time; one less per healthy base ejection time). */
  ejections: number;
}

export type OutlierEvent =
  | ({ kind: 'ejected'; refused: boolean } & Ejection)
  | { kind: 'returned'; backend: string; services: string[]; ejectedMs: number; ejections: number; early: boolean }
  /** Would be ejected, but its services already have as many ejected as they may (logged once per streak). */
  | { kind: 'held'; backend: string; services: string[]; failures: number; service: string };

interface State {
  /** The sample's cumulative successes and refusals at the last poll. */
  successes: number;
  refused: number;
  /** A probe was refused (then): ejects at the next observe unless a client connect succeeded since. */
  probeRefusedMs?: number;
  /** Consecutive failures as judged at the last poll (with failed probes). */
  consecutive: number;
  /** TCP: the datapath's last client failure seen (its lastFailureMs). */
  clientFailureMs?: number;
  /** Failure events seen (the metric). */
  failures: number;
  ejections: number;
  ejected?: { sinceMs: number; untilMs: number; failures: number };
  /** Back from an ejection: `base` is the consecutive count it returned with (old sockets still fail). */
  probation?: { base: number };
  /** Healthy (not ejected, nothing failing) since: every base ejection time of it takes one off `ejections`. */
  healthySinceMs?: number;
  held?: boolean;
  /** Probes: in flight now, when the last was started, end times of those failed since the last that succeeded. */
  probing: number;
  probedAtMs?: number;
  probeFailures: number[];
  /**
   * When the latest probe that connected was started: the earliest moment it vouches for (its outcome may be read
   * late, on a busy node), so a refusal after it is still news.
   */
  probeOkMs?: number;
  /** The last time it answered this node: a client connect (the datapath's lastSuccessMs) or a probe. */
  okMs?: number;
  /** Ejected, and a probe has succeeded since: it returns at the next look. */
  recovered?: boolean;
  /** A sibling of a failing backend, to probe (from this moment). */
  suspectSinceMs?: number;
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

/** Every backend of the service (all tiers) as health keys, with the cluster it is in. */
export function backendClusters(m: MergedService): Map<string, string> {
  const out = new Map<string, string>();
  const local = m.clusters.find((c) => c.local);
  if (!local) return out;
  for (const c of m.clusters) {
    for (const b of c.service.backends) {
      for (const port of local.service.ports) {
        const p = b.ports[port.name];
        if (p && p.protocol === port.protocol && port.protocol !== 'SCTP') out.set(keyOf(port.protocol, b.ip, p.port), c.cluster);
      }
    }
  }
  return out;
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
   * the time in ms (the clock of the samples' timestamps: CLOCK_MONOTONIC). `domainOf` (backend key → its
   * cluster) lets a failing backend's siblings in the same cluster be probed. Returns the backends whose
   * ejection changed (their services need reprogramming) and what happened.
   */
  observe(samples: ReadonlyMap<string, HealthSample>, services: ReadonlyMap<string, readonly string[]>, nowMs: number, domainOf: ReadonlyMap<string, string> = new Map()): { changed: Set<string>; events: OutlierEvent[] } {
    const of = servicesOf(services);
    const changed = new Set<string>();
    const events: OutlierEvent[] = [];
    // A backend no service has any more is forgotten (its services were reprogrammed without it anyway).
    for (const k of [...this.state.keys()]) {
      if (of.has(k)) continue;
      this.state.delete(k);
      if (this.ejectedSet.delete(k)) changed.add(k);
    }
    // The ejected first (one that returns makes room for another held by the share in the same poll), then
    // those the clients see working (proven before a failing one asks for room past the share).
    const rank = (k: string) => (this.ejectedSet.has(k) ? 0 : samples.get(k)?.consecutive === 0 ? 1 : 2);
    for (const [key, svcs] of [...of].sort(([a], [b]) => rank(a) - rank(b))) {
      const h = samples.get(key);
      let st = this.state.get(key);
      if (!h && !st) continue;
      if (!st) {
        // Refusals already counted are news (a first connect refused ejects too); successes are not.
        st = fresh(h!.successes);
        this.state.set(key, st);
      }
      // A recreated entry (agent cleanup, LRU) starts its counters over.
      if (h && h.successes < st.successes) st.successes = 0;
      if (h && (h.refused ?? 0) < st.refused) st.refused = 0;
      const refused = this.refusedNow(st, h);
      const advanced = !!h && h.successes > st.successes;
      const consecutive = this.judge(key, st, h, nowMs);
      const added = advanced ? consecutive : Math.max(0, consecutive - st.consecutive);
      st.failures += added;
      this.failuresTotal += added;
      // New failures the clients saw: the backend's siblings in the same cluster are probed too.
      if (h?.proto === 'TCP' && h.consecutive > 0 && h.lastFailureMs > (st.clientFailureMs ?? 0)) {
        st.clientFailureMs = h.lastFailureMs;
        if (!st.ejected) this.suspectSiblings(key, svcs, services, domainOf, nowMs, h.lastFailureMs);
      }
      if (h) st.successes = h.successes;
      if (advanced && h.proto === 'TCP') st.okMs = Math.max(st.okMs ?? h.lastSuccessMs, h.lastSuccessMs);
      st.consecutive = consecutive;

      if (st.ejected) {
        if (nowMs < st.ejected.untilMs && !st.recovered) continue;
        const ejectedMs = nowMs - st.ejected.sinceMs;
        const early = nowMs < st.ejected.untilMs;
        st.ejected = undefined;
        st.recovered = undefined;
        st.probeFailures = [];
        this.ejectedSet.delete(key);
        if (h?.proto === 'UDP') st.udpReset = { atMs: nowMs, sent: h.sent };
        st.probation = { base: this.judge(key, st, h, nowMs) };
        st.consecutive = st.probation.base;
        changed.add(key);
        events.push({ kind: 'returned', backend: key, services: svcs, ejectedMs, ejections: st.ejections, early });
        continue;
      }
      const n = this.options.consecutiveFailures;
      let trip = false;
      if (st.probation) {
        if (refused || (advanced ? consecutive > 0 : consecutive > st.probation.base)) trip = n > 0;
        else if (advanced) st.probation = undefined;
      } else trip = n > 0 && (consecutive >= n || refused);
      if (!trip) {
        st.held = false;
        this.decay(st, consecutive, nowMs);
        continue;
      }
      st.healthySinceMs = undefined;
      const full = svcs.find((s) => !this.room(services.get(s) ?? [], key, nowMs));
      if (full) {
        if (!st.held) events.push({ kind: 'held', backend: key, services: svcs, failures: consecutive, service: full });
        st.held = true;
        // Past the share only while another backend is known to work: find out (probe those not known).
        this.suspectUnproven(services.get(full) ?? [], key, nowMs);
        continue;
      }
      st.held = false;
      st.probation = undefined;
      st.suspectSinceMs = undefined;
      st.probeFailures = [];
      st.ejections++;
      this.ejectionsTotal++;
      const forMs = Math.min(this.options.baseEjectionMs * st.ejections, this.options.maxEjectionMs);
      st.ejected = { sinceMs: nowMs, untilMs: nowMs + forMs, failures: consecutive };
      this.ejectedSet.add(key);
      changed.add(key);
      events.push({ kind: 'ejected', refused, backend: key, services: svcs, sinceMs: nowMs, untilMs: nowMs + forMs, failures: consecutive, ejections: st.ejections });
    }
    return { changed, events };
  }

  /**
   * The probes to start now, by backend key (TCP only): a failing or suspected backend gets as many at once as
   * it still lacks failures to be judged (one on probation), none while it is held by the share; an ejected one
   * one every recoveryProbeMs. The caller reports each start (probeStarted) and end (probeEnded).
   */
  probesWanted(nowMs: number): Map<string, number> {
    const out = new Map<string, number>();
    if (this.options.recoveryProbeMs <= 0 || this.options.consecutiveFailures <= 0) return out;
    for (const [key, st] of this.state) {
      if (!key.startsWith('TCP/')) continue;
      let want = 0;
      if (st.ejected) {
        if (!st.recovered && st.probing === 0 && nowMs - (st.probedAtMs ?? -Infinity) >= this.options.recoveryProbeMs) want = 1;
      } else if (!st.held) {
        const base = st.probation?.base ?? 0;
        const failing = st.consecutive > base && !(st.probeOkMs !== undefined && st.probeOkMs > (st.clientFailureMs ?? -Infinity));
        if (failing || st.suspectSinceMs !== undefined) want = (st.probation ? 1 : Math.max(1, this.options.consecutiveFailures - st.consecutive)) - st.probing;
      }
      if (want > 0) out.set(key, want);
    }
    return out;
  }

  probeStarted(key: string, nowMs: number): void {
    const st = this.state.get(key);
    if (!st) return;
    st.probing++;
    st.probedAtMs = nowMs;
  }

  /**
   * A probe's outcome. A failure counts (at the next observe) as a consecutive failure unless a probe that
   * started later already succeeded; a success ends the probing of this streak, and returns an ejected backend
   * at the next observe.
   */
  probeEnded(key: string, outcome: ProbeOutcome, startedMs: number, endedMs: number): void {
    const st = this.state.get(key);
    if (!st) return;
    st.probing = Math.max(0, st.probing - 1);
    if (outcome === 'ok') {
      st.probeOkMs = Math.max(st.probeOkMs ?? startedMs, startedMs);
      st.okMs = Math.max(st.okMs ?? endedMs, endedMs);
      st.probeFailures = [];
      st.suspectSinceMs = undefined;
      if (st.ejected && startedMs >= st.ejected.sinceMs) st.recovered = true;
    } else if (startedMs >= (st.probeOkMs ?? -Infinity) && !st.ejected) {
      st.probeFailures.push(endedMs);
      if (outcome === 'refused') st.probeRefusedMs = endedMs;
    }
  }

  /**
   * Whether the backend was refused since the last look (a client connect the datapath counted as refused, or a
   * probe) and nothing connected to it after that refusal. Consumes what it looked at.
   */
  private refusedNow(st: State, h: HealthSample | undefined): boolean {
    const lastOk = Math.max(h?.lastSuccessMs ?? -Infinity, st.probeOkMs ?? -Infinity);
    let refused = false;
    if (h?.proto === 'TCP' && (h.refused ?? 0) > st.refused) refused = (h.lastRefusedMs ?? 0) > lastOk;
    if (h) st.refused = h.refused ?? 0;
    if (st.probeRefusedMs !== undefined) refused ||= st.probeRefusedMs > lastOk;
    st.probeRefusedMs = undefined;
    return refused;
  }

  /** Probes in flight (all backends). */
  probing(): number {
    let n = 0;
    for (const st of this.state.values()) n += st.probing;
    return n;
  }

  /**
   * Backends with a stalled connection (the datapath's readStalled: backend key → when the latest stalled
   * request was sent): each, and its siblings in the same cluster, become suspects — probed, never ejected for
   * the stall itself (a slow answer is not a failure) — unless a probe connected to it after that request
   * left (its kernel answers, its application is slow: probing again tells nothing new). Returns
   * whether any became a suspect.
   */
  stalled(stalls: ReadonlyMap<string, number>, services: ReadonlyMap<string, readonly string[]>, nowMs: number, domainOf: ReadonlyMap<string, string> = new Map()): boolean {
    if (this.options.recoveryProbeMs <= 0 || this.options.consecutiveFailures <= 0) return false;
    const of = servicesOf(services);
    let any = false;
    for (const [key, sentMs] of stalls) {
      const svcs = of.get(key);
      if (!svcs || !key.startsWith('TCP/')) continue;
      let st = this.state.get(key);
      if (!st) this.state.set(key, (st = fresh(0)));
      if (st.ejected || st.held || st.suspectSinceMs !== undefined) continue;
      if (st.probeOkMs !== undefined && st.probeOkMs >= sentMs) continue;
      st.suspectSinceMs = nowMs;
      any = true;
      this.suspectSiblings(key, svcs, services, domainOf, nowMs, sentMs);
    }
    return any;
  }

  /**
   * The other TCP backends of `key`'s services in its cluster become suspects, but those a probe found answering
   * since shortly before the evidence against `key` (`evidenceMs`: its failure, or when a stalled request
   * was sent) — an earlier probe says nothing about a fault that came later.
   */
  private suspectSiblings(key: string, svcs: readonly string[], services: ReadonlyMap<string, readonly string[]>, domainOf: ReadonlyMap<string, string>, nowMs: number, evidenceMs: number): void {
    const domain = domainOf.get(key);
    if (domain === undefined || this.options.recoveryProbeMs <= 0) return;
    for (const s of svcs) {
      for (const m of services.get(s) ?? []) {
        if (m === key || !m.startsWith('TCP/') || domainOf.get(m) !== domain) continue;
        let st = this.state.get(m);
        if (!st) this.state.set(m, (st = fresh(0)));
        if (st.ejected || st.held || st.suspectSinceMs !== undefined) continue;
        if (st.probeOkMs !== undefined && st.probeOkMs >= evidenceMs - this.options.suspectCooldownMs) continue;
        st.suspectSinceMs = nowMs;
      }
    }
  }

  /** Healthy for a base ejection time: one ejection fewer counts towards the next one's length (as Envoy). */
  private decay(st: State, consecutive: number, nowMs: number): void {
    if (consecutive > (st.probation?.base ?? 0)) {
      st.healthySinceMs = undefined;
      return;
    }
    st.healthySinceMs ??= nowMs;
    while (st.ejections > 0 && nowMs - st.healthySinceMs >= this.options.baseEjectionMs) {
      st.ejections--;
      st.healthySinceMs += this.options.baseEjectionMs;
    }
  }

  /**
   * Whether `candidate`, one more of `members`, may be ejected: within the share; past it only while another
   * member not ejected and failing nothing has answered this node (a client connect or a probe) within
   * provenMs — the share guards against this node's own trouble (everything failing from here), not against
   * failing over from dead backends to working ones — and never the last one.
   */
  private room(members: readonly string[], candidate: string, nowMs: number): boolean {
    const ejected = members.filter((k) => this.ejectedSet.has(k)).length;
    if (ejected + 1 > members.length - 1) return false;
    if (ejected + 1 <= Math.floor((members.length * this.options.maxEjectedPercent) / 100)) return true;
    return members.some((k) => k !== candidate && this.proven(k, nowMs));
  }

  /** Not ejected, failing nothing, and answered this node within provenMs. */
  private proven(key: string, nowMs: number): boolean {
    const st = this.state.get(key);
    return !!st && !st.ejected && st.consecutive === 0 && st.okMs !== undefined && nowMs - st.okMs <= this.options.provenMs;
  }

  /** Members of a full service neither ejected, failing nor proven lately become suspects (probed once). */
  private suspectUnproven(members: readonly string[], candidate: string, nowMs: number): void {
    if (this.options.recoveryProbeMs <= 0) return;
    for (const k of members) {
      if (k === candidate || !k.startsWith('TCP/') || this.proven(k, nowMs)) continue;
      let st = this.state.get(k);
      if (!st) this.state.set(k, (st = fresh(0)));
      if (st.ejected || st.held || st.consecutive > 0 || st.suspectSinceMs !== undefined) continue;
      if (st.probeOkMs !== undefined && nowMs - st.probeOkMs < this.options.suspectCooldownMs) continue;
      st.suspectSinceMs = nowMs;
    }
  }

  /** The backend's consecutive failures now: the datapath's, plus for TCP the probes failed since its last success. */
  private judge(key: string, st: State, h: HealthSample | undefined, nowMs: number): number {
    if (!h) return key.startsWith('TCP/') ? st.probeFailures.length : st.consecutive;
    if (h.proto === 'TCP') return h.consecutive + st.probeFailures.filter((t) => t > h.lastSuccessMs).length;
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

const fresh = (successes: number): State => ({ successes, refused: 0, consecutive: 0, failures: 0, ejections: 0, probing: 0, probeFailures: [] });

function servicesOf(services: ReadonlyMap<string, readonly string[]>): Map<string, string[]> {
  const of = new Map<string, string[]>();
  for (const [id, keys] of services) for (const k of keys) of.set(k, [...(of.get(k) ?? []), id]);
  return of;
}
