// The node agent: follows its own cluster's mesh etcd only (the local export, every remote's cached copy
// and their sync health), computes each service's active backends, and programs the BPF socket LB with
// the difference. It lists the mesh prefix once (paginated), then follows a watch from that revision into
// an in-memory merged view; a change recomputes only the services it touched, and bursts are coalesced.
// A broken watch (etcd down, history compacted) ends in a fresh listing that recomputes everything.
// A frontend the datapath refuses (a full map, too many backends, a bad value) fails alone: it is recorded,
// logged once per distinct error, published and retried on its own backoff while the pass goes on.
// With a health source, the agent polls what the node's sockets experienced per backend (skein_health) and
// ejects failing backends (outliers.ts); an ejection or a return reprograms the services it touches at once.
import type { Etcd3, Lease } from 'etcd3';
import { openWatch, type MeshWatch } from '../../mesh/etcd-watch.js';
import { LeaseSession } from '../../mesh/lease-session.js';
import { datapathPrefixes, keys } from '../../mesh/schema/keys.js';
import { AGENT_VIEW_MAX, AgentFrontendShard, AgentView, encodeValue } from '../../mesh/schema/values.js';
import { AGENT_VIEW_SHARDS, agentShards } from '../../mesh/agent-view.js';
import { loadMergedView, type MergedView } from './merged-view.js';
import { monotonicMs, ProgramError, type BackendHealth, type Programmed, type ServiceProgrammer, type SocketLb } from '../socket-lb.js';
import { activeBackends } from './policy.js';
import { backendClusters, OutlierDetector, serviceBackends, type OutlierEvent, type OutlierOptions } from './outliers.js';
import { Prober, type ProbeConnect } from './prober.js';
import type { PeerRoutes } from './peer-routes.js';
import { backoffDelay, type BackoffOptions } from '../../mesh/backoff.js';

const fkey = (p: Programmed) => `${p.frontend.proto}/${p.frontend.ip}:${p.frontend.port}`;
const bkey = (p: Programmed) => p.backends.map((b) => `${b.ip}:${b.port}`).sort().join(',');

/** A frontend the datapath refused, as published (AgentView.failing) and exported as a metric. */
export interface Failure {
  /** The service whose frontend it is (namespace/name); '' for a leftover frontend that could not be removed. */
  service: string;
  reason: string;
  error: string;
  /** When it first failed for the backends it wants now (ISO). */
  since: string;
  attempts: number;
}
/** A backend outlier detection took out, as published (AgentView.ejected) and served on /v1/programmed. */
export interface EjectedBackend {
  /** PROTO/ip:port */
  backend: string;
  /** The first service (namespace/name) it is a backend of. */
  service?: string;
  since: string;
  until: string;
  failures: number;
  ejections: number;
}

/** Where backend health comes from (SocketLb in the agent, a fake in unit tests). */
export type HealthSource = Pick<SocketLb, 'readHealth' | 'forgetHealth'> & Partial<Pick<SocketLb, 'failureSeq' | 'readStalled'>>;
/** How often the health map is read. */
const HEALTH_POLL_MS = 100;
/** How often the datapath's failure count is looked at (one value): a new failure is read at once. */
const FAILURE_SIGNAL_MS = 20;
/** A route the kernel refused (its gateway not on a connected network yet) is tried again this often. */
const ROUTES_RETRY_MS = 5_000;

/** Retries of one failing service: the first after RETRY.minMs, doubling to RETRY.maxMs. */
const RETRY = { minMs: 500, maxMs: 30_000, jitter: 0.2 };
/** A failed removal is retried by a full pass, whose cleanup finds every unclaimed frontend. */
const REMOVALS = '';
/** Errors are published and logged; a longer message is cut (the view is bounded). */
const ERROR_MAX = 500;
const shape = (error: string) => error.replace(/\d+/g, '#');

export class NodeAgent {
  private readonly programmed = new Map<string, Programmed>();
  /** Service id → the frontends it programmed, so a service that goes or changes ClusterIP is cleaned up. */
  private readonly frontendsOf = new Map<string, Set<string>>();
  private view?: MergedView;
  private watchers: MeshWatch[] = [];
  private running = false;
  private dirty = false;
  /** Services to recompute; `all` after a (re)listing. */
  private pending: Set<string> | 'all' = 'all';
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  /** Frontend key → why the datapath refused it; `want` is the backend set that failed. */
  private readonly failing = new Map<string, Failure & { want: string }>();
  /** Service id (or REMOVALS) → its pending retry. */
  private readonly retries = new Map<string, NodeJS.Timeout>();
  syncs = 0;
  updates = 0;
  lastSyncMs = 0;
  readonly outliers: OutlierDetector;
  /** Service id → its usable backends (PROTO/ip:port): what ejection shares are counted against. */
  private readonly members = new Map<string, string[]>();
  /** Backend key → its cluster: a failing backend's siblings in the same cluster are probed. */
  private readonly clusterOf = new Map<string, string>();
  private healthTimer?: NodeJS.Timeout;
  private signalTimer?: NodeJS.Timeout;
  private failureSeq = -1;
  private pollQueued = false;
  readonly prober?: Prober;
  private routesDirty = false;
  private routesRetry?: NodeJS.Timeout;

  /** The published view's lease: the view expires with a dead agent, and is put again on a new lease after a loss. */
  private readonly viewLease = new LeaseSession({
    etcd: () => this.o.etcd,
    ttlSeconds: 15,
    onNewLease: (lease) => this.putView(lease, true),
    onLost: (err) => this.o.log.warn({ err: err.message }, 'node view lease lost, granting a new one'),
    onRetry: (err, attempt) => this.o.log.warn({ err: err.message, attempt }, 'publishing the node view failed'),
  });
  private publishTimer?: NodeJS.Timeout;
  private published = '';
  /** Shard → the value last put (a shard absent here is not in the etcd). */
  private publishedShards = new Map<number, string>();
  /** What the node's Workload API serves (bundles, SVID signers), when it runs one. */
  private workloadView?: () => AgentView['workload'];

  constructor(
    private readonly o: {
      etcd: Etcd3;
      cluster: string;
      node: string;
      lb: ServiceProgrammer;
      log: { warn: (o: object, m: string) => void; info: (o: object, m: string) => void; debug?: (o: object, m: string) => void; isLevelEnabled?: (level: string) => boolean };
      /** The listing (unit tests hand in a view; the watch still comes from `etcd`). */
      loadView?: typeof loadMergedView;
      /** Backoff of a failing service's retries (default RETRY). */
      retry?: BackoffOptions;
      /** Backend health from the datapath; without it nothing is ejected. */
      health?: HealthSource;
      /** How often health is read (default HEALTH_POLL_MS). */
      healthPollMs?: number;
      outliers?: Partial<OutlierOptions>;
      /** The clock of the health samples (CLOCK_MONOTONIC, ms); unit tests hand in a fake. */
      now?: () => number;
      /** Active probes of failing, suspected and ejected backends (prober.ts); without it none. */
      probe?: { timeoutMs: number; maxInFlight: number; connect?: ProbeConnect };
      /** How often the datapath's failure count is looked at (default FAILURE_SIGNAL_MS; 0: only the poll). */
      failureSignalMs?: number;
      /** Routes to remote nodes' pod CIDRs (`--peer-routes`); without it none are made. */
      routes?: PeerRoutes;
    },
  ) {
    this.outliers = new OutlierDetector(o.outliers);
    if (o.probe) this.prober = new Prober({ ...o.probe, now: () => this.now() });
  }

  async start(): Promise<void> {
    for (const p of this.o.lb.adopt()) this.programmed.set(fkey(p), p);
    await this.follow();
    await this.idle();
    if (!this.o.health || this.stopped) return;
    this.healthTimer = setInterval(() => this.pollHealth(), this.o.healthPollMs ?? HEALTH_POLL_MS);
    const signalMs = this.o.failureSignalMs ?? FAILURE_SIGNAL_MS;
    if ((this.o.health.failureSeq || this.o.health.readStalled) && signalMs > 0) this.signalTimer = setInterval(() => this.checkFailureSignal(), signalMs);
  }

  /**
   * One look at the datapath's failure count (a new failure is judged now, not at the next poll) and at its
   * stalled connections (their backends are probed now).
   */
  private checkFailureSignal(): void {
    this.checkStalls();
    let seq;
    try {
      seq = this.o.health?.failureSeq?.() ?? 0;
    } catch {
      return; // the regular poll reports read errors
    }
    if (seq === this.failureSeq) return;
    this.failureSeq = seq;
    this.pollHealth();
  }

  private checkStalls(): void {
    const stallMs = this.outliers.options.stallMs;
    if (!this.o.health?.readStalled || !this.prober || stallMs <= 0) return;
    let stalled;
    try {
      stalled = this.o.health.readStalled(stallMs, this.now());
    } catch {
      return; // the regular poll reports read errors
    }
    if (!stalled.size) return;
    if (!this.outliers.stalled(stalled, this.members, this.now(), this.clusterOf)) return;
    this.o.log.info({ backends: [...stalled.keys()], stallMs }, 'connections stalled (request sent, nothing back): probing their backends and siblings');
    this.runProbes();
  }

  /** A poll as soon as the current work is done (after a probe ends): bursts of outcomes make one poll. */
  private pollSoon(): void {
    if (this.pollQueued || this.stopped) return;
    this.pollQueued = true;
    setImmediate(() => {
      this.pollQueued = false;
      if (!this.stopped) this.pollHealth();
    });
  }

  private runProbes(): void {
    if (!this.prober || this.stopped) return;
    const wanted = this.outliers.probesWanted(this.now());
    if (!wanted.size) return;
    // Probes of backends not ejected (a failure streak, or its siblings): logged, the recovery probes are not.
    const judging = [...wanted.keys()].filter((k) => !this.outliers.ejectedKeys().has(k));
    if (judging.length) this.o.log.info({ backends: judging, probes: judging.reduce((n, k) => n + wanted.get(k)!, 0), inFlight: this.prober.probing }, 'probing failing backends and their siblings from this node');
    this.prober.run(
      wanted,
      (key, at) => this.outliers.probeStarted(key, at),
      (key, outcome, startedMs, endedMs) => {
        this.outliers.probeEnded(key, outcome, startedMs, endedMs);
        this.pollSoon();
      },
    );
  }

  /**
   * One look at the datapath's health counters: ejections and returns reprogram their services now (not at
   * the next etcd change); entries of backends no service uses any more are removed from the map.
   */
  pollHealth(): void {
    const health = this.o.health;
    if (!health) return;
    let samples;
    try {
      samples = health.readHealth();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'reading backend health failed');
      return;
    }
    if (this.o.log.isLevelEnabled?.('debug')) this.traceHealth(samples);
    const { changed, events } = this.outliers.observe(samples, this.members, this.now(), this.clusterOf);
    for (const e of events) this.logOutlier(e);
    this.runProbes();
    if (changed.size) {
      const touched = new Set<string>();
      for (const [id, keys] of this.members) if (keys.some((k) => changed.has(k))) touched.add(id);
      if (this.pending !== 'all') for (const id of touched) this.pending.add(id);
      this.schedule();
    }
    const keep = new Set([...this.members.values()].flat());
    for (const p of this.programmed.values()) for (const b of p.backends) keep.add(`${p.frontend.proto}/${b.ip}:${b.port}`);
    for (const k of this.clusterOf.keys()) if (!keep.has(k)) this.clusterOf.delete(k);
    for (const k of samples.keys()) {
      if (keep.has(k)) continue;
      try {
        health.forgetHealth(k);
      } catch (err) {
        this.o.log.warn({ backend: k, err: (err as Error).message }, 'removing a health entry failed');
      }
    }
  }

  /** Debug level: every backend whose TCP failure or refusal count moved since the last look (timing a drill's tail). */
  private traceHealth(samples: ReadonlyMap<string, BackendHealth>): void {
    for (const [k, h] of samples) {
      const seen = this.traced.get(k);
      this.traced.set(k, { failures: h.failures, refused: h.refused });
      if (!seen || (seen.failures === h.failures && seen.refused === h.refused)) continue;
      this.o.log.debug?.({ backend: k, failures: h.failures - seen.failures, refused: h.refused - seen.refused, consecutive: h.consecutive, lastFailureMs: h.lastFailureMs, lastRefusedMs: h.lastRefusedMs, nowMs: this.now() }, 'backend health counters moved');
    }
    for (const k of this.traced.keys()) if (!samples.has(k)) this.traced.delete(k);
  }
  private readonly traced = new Map<string, { failures: number; refused: number }>();

  private now(): number {
    return (this.o.now ?? monotonicMs)();
  }

  /** A monotonic time as wall-clock ISO (for the view): one offset, so a published time does not jitter. */
  private iso(ms: number): string {
    this.wallOffset ??= Date.now() - this.now();
    return new Date(Math.round(ms + this.wallOffset)).toISOString();
  }
  private wallOffset?: number;

  private logOutlier(e: OutlierEvent): void {
    if (e.kind === 'ejected') this.o.log.warn({ backend: e.backend, services: e.services, failures: e.failures, ejections: e.ejections, ejectedMs: Math.round(e.untilMs - e.sinceMs) }, e.refused ? 'backend ejected: a connect from this node was refused (nothing listens)' : 'backend ejected: consecutive failures seen by this node');
    else if (e.kind === 'returned') this.o.log.info({ backend: e.backend, services: e.services, ejectedMs: Math.round(e.ejectedMs), ejections: e.ejections, early: e.early }, e.early ? 'backend returned early: a probe from this node connected (on probation: one failure ejects it again)' : 'backend returned after ejection (on probation: one failure ejects it again)');
    else this.o.log.warn({ backend: e.backend, service: e.service, failures: e.failures }, 'backend failing but not ejected: its service already has the most ejected backends it may');
  }

  /** The backends ejected now. */
  ejections(): EjectedBackend[] {
    return this.outliers.ejections(this.members).map((e) => ({ backend: e.backend, service: e.services[0], since: this.iso(e.sinceMs), until: this.iso(e.untilMs), failures: e.failures, ejections: e.ejections }));
  }

  /** Lists the mesh prefix into a new view and watches from its revision; retried until it works. */
  private async follow(): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const { view, revision } = await (this.o.loadView ?? loadMergedView)(this.o.etcd, this.o.cluster);
        // One watch per prefix the node's etcd role may read (a watch of the whole mesh prefix is refused).
        const watchers = await Promise.all(datapathPrefixes(this.o.cluster).map((prefix) => openWatch(this.o.etcd, { prefix }, revision + 1)));
        for (const { watcher } of watchers) {
          watcher.on('put', (kv) => this.onChange(view, kv.key.toString(), kv.value.toString()));
          watcher.on('delete', (kv) => this.onChange(view, kv.key.toString(), undefined));
          watcher.on('error', (err) => void this.restart(watchers, err));
        }
        await this.cancelWatchers();
        this.watchers = watchers;
        this.view = view;
        this.pending = 'all';
        this.schedule();
        return;
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message, attempt }, 'listing the mesh etcd failed, retrying');
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, { minMs: 200, maxMs: 5_000 })));
      }
    }
  }

  private async restart(watchers: MeshWatch[], err: Error): Promise<void> {
    if (watchers !== this.watchers || this.stopped) return;
    this.o.log.warn({ err: err.message }, 'mesh etcd watch broke; listing again');
    await this.cancelWatchers();
    await this.follow();
  }

  /** Routes follow the remote nodes; one that could not be installed is tried again on a timer. */
  private syncRoutes(view: MergedView): void {
    this.routesDirty = false;
    clearTimeout(this.routesRetry);
    const failed = this.o.routes!.sync(view.remoteNodes());
    if (failed.length && !this.stopped) {
      this.routesRetry = setTimeout(() => {
        this.routesDirty = true;
        this.schedule();
      }, ROUTES_RETRY_MS);
    }
  }

  private async cancelWatchers(): Promise<void> {
    const old = this.watchers;
    this.watchers = [];
    await Promise.all(old.map((w) => w.cancel()));
  }

  private onChange(view: MergedView, key: string, value: string | undefined): void {
    // The agents' own views carry no datapath state (and reacting to them would loop).
    if (view !== this.view || key.startsWith(keys.agentsPrefix(this.o.cluster))) return;
    const nodesBefore = view.nodesVersion;
    const touched = view.apply(key, value);
    if (view.nodesVersion !== nodesBefore && this.o.routes) this.routesDirty = true;
    else if (touched.length === 0) return;
    if (this.pending !== 'all') for (const id of touched) this.pending.add(id);
    this.schedule();
  }

  private schedule(): void {
    this.dirty = true;
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      try {
        await this.reconcile();
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'reconcile failed, retrying');
        await new Promise((r) => setTimeout(r, 500));
        this.dirty = true;
      }
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  idle(): Promise<void> {
    return this.running || this.dirty ? new Promise((r) => this.idleWaiters.push(r)) : Promise.resolve();
  }

  private async reconcile(): Promise<void> {
    const view = this.view;
    if (!view) return;
    const t0 = performance.now();
    const pending = this.pending;
    const all = pending === 'all';
    const ids = pending === 'all' ? new Set([...view.ids(), ...this.frontendsOf.keys()]) : pending;
    this.pending = new Set();
    try {
      this.reconcileServices(view, ids, all);
    } catch (err) {
      this.pending = 'all'; // the retry must not forget what this pass did not finish
      throw err;
    }
    if (this.o.routes && (all || this.routesDirty)) this.syncRoutes(view);
    this.syncs++;
    this.lastSyncMs = performance.now() - t0;
    this.publishSoon();
  }

  private reconcileServices(view: MergedView, ids: Set<string>, all: boolean): void {
    for (const id of ids) {
      const m = view.get(id);
      const desired = new Map((m ? activeBackends(m, this.outliers.ejectedKeys()) : []).map((p) => [fkey(p), p] as const));
      const members = m ? serviceBackends(m) : [];
      if (members.length) this.members.set(id, members);
      else this.members.delete(id);
      if (m) for (const [k, cluster] of backendClusters(m)) this.clusterOf.set(k, cluster);
      let attempts = 0; // the most of any frontend of this service still failing: its retry's backoff
      for (const [k, p] of desired) {
        const have = this.programmed.get(k);
        if (have && bkey(have) === bkey(p)) {
          this.succeeded(k);
          continue;
        }
        try {
          this.o.lb.setService(p.frontend, p.backends);
        } catch (err) {
          // The datapath keeps what it had for this frontend (socket-lb rolls back); the others go on.
          attempts = Math.max(attempts, this.failed(k, id, bkey(p), err));
          this.degrade(k, have, p, err);
          continue;
        }
        this.programmed.set(k, p);
        this.updates++;
        this.succeeded(k);
      }
      // A ClusterIP can pass from a deleted service to a new one in the same pass: keep what another claims.
      for (const k of this.frontendsOf.get(id) ?? []) {
        if (desired.has(k) || this.claimedByOther(id, k)) continue;
        if (this.failing.get(k)?.service === id) this.failing.delete(k);
        this.unprogram(k, id);
      }
      if (desired.size) this.frontendsOf.set(id, new Set(desired.keys()));
      else this.frontendsOf.delete(id);
      this.scheduleRetry(id, attempts);
    }
    // After a full pass, whatever no service claims (adopted from a previous agent, or gone) is removed.
    if (all) {
      const claimed = new Set([...this.frontendsOf.values()].flatMap((s) => [...s]));
      for (const k of [...this.programmed.keys()]) if (!claimed.has(k)) this.unprogram(k, REMOVALS);
      for (const k of [...this.failing.keys()]) if (!claimed.has(k) && !this.programmed.has(k)) this.failing.delete(k);
      if (![...this.failing.values()].some((f) => f.service === REMOVALS)) this.scheduleRetry(REMOVALS, 0);
    }
  }

  /**
   * A full map must not pin a service that fails over to its old, maybe dead, backends: the slots it already
   * has take as many of the wanted ones (it stays failing until all fit).
   */
  private degrade(k: string, have: Programmed | undefined, want: Programmed, err: unknown): void {
    if (!(err instanceof ProgramError) || err.reason !== 'map-full' || !have?.backends.length || want.backends.length <= have.backends.length) return;
    const partial: Programmed = { frontend: want.frontend, backends: want.backends.slice(0, have.backends.length) };
    if (bkey(partial) === bkey(have)) return;
    try {
      this.o.lb.setService(partial.frontend, partial.backends);
    } catch {
      return; // no room even for that (new backend addresses need skein_backends): it keeps what it had
    }
    this.programmed.set(k, partial);
    this.updates++;
  }

  /** Records a refusal and returns its attempts; logs only a new failure or a different error. */
  private failed(k: string, service: string, want: string, err: unknown): number {
    const reason = err instanceof ProgramError ? err.reason : 'error';
    const error = ((err as Error)?.message ?? String(err)).slice(0, ERROR_MAX);
    const prev = this.failing.get(k);
    // A new backend set starts over (attempts, since), but the same error is still not logged again.
    const same = prev?.want === want;
    const attempts = same ? prev.attempts + 1 : 1;
    this.failing.set(k, { service, reason, error, want, since: same ? prev.since : new Date().toISOString(), attempts });
    // Counts in a message (entries in use, say) move with every retry; only a different text is news.
    if (prev?.reason !== reason || shape(prev.error) !== shape(error)) this.o.log.warn({ frontend: k, service: service || undefined, reason, err: error }, 'cannot program this frontend; it is retried on its own, other services are unaffected');
    return attempts;
  }

  private succeeded(k: string): void {
    const f = this.failing.get(k);
    if (!f) return;
    this.failing.delete(k);
    this.o.log.info({ frontend: k, service: f.service || undefined, attempts: f.attempts }, 'frontend programmed after failing');
  }

  /** Retries a service while any of its frontends fails (`attempts` > 0), on a backoff of its own; else cancels. */
  private scheduleRetry(id: string, attempts: number): void {
    if (attempts === 0) {
      clearTimeout(this.retries.get(id));
      this.retries.delete(id);
      return;
    }
    if (this.retries.has(id) || this.stopped) return;
    const timer = setTimeout(() => {
      this.retries.delete(id);
      if (id === REMOVALS) this.pending = 'all';
      else if (this.pending !== 'all') this.pending.add(id);
      this.schedule();
    }, backoffDelay(attempts - 1, this.o.retry ?? RETRY));
    this.retries.set(id, timer);
  }

  /** The frontends the datapath refused, by frontend key (PROTO/ip:port). */
  failures(): Map<string, Failure> {
    return new Map([...this.failing].sort(([a], [b]) => a.localeCompare(b)).map(([k, { want: _want, ...f }]) => [k, f]));
  }

  /** Publishes `view` with the node view from now on, and again whenever `changed` is called. */
  followWorkload(view: () => AgentView['workload']): { changed: () => void } {
    this.workloadView = view;
    this.publishSoon();
    return { changed: () => this.publishSoon() };
  }

  /** The node's view for `skein status`, at most once a second, on a lease so a dead agent's view expires. */
  private publishSoon(): void {
    if (this.publishTimer) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = undefined;
      void this.publish().catch((err: Error) => this.o.log.warn({ err: err.message }, 'publishing the node view failed'));
    }, 1000);
  }

  private async publish(): Promise<void> {
    const lease = this.viewLease.lease;
    // No lease yet, an open that failed, or a loss being replaced: opening one puts the view on it.
    if (!lease) return this.viewLease.open();
    await this.putView(lease, false);
  }

  /**
   * The view onto the lease: its frontends in hash shards (mesh/agent-view.ts), each put only when it changed
   * and deleted when it empties, then the header (counts, failures, ejections) when anything changed beyond
   * its counters. `always` (a new lease) puts every shard and deletes every empty one, which also clears an
   * earlier incarnation's shards before their lease expires.
   */
  private async putView(lease: Lease, always: boolean): Promise<void> {
    const all = this.dump();
    const shards = agentShards(
      this.o.node,
      all.map((p) => [fkey(p), p.backends.map((b) => `${b.ip}:${b.port}`)] as const),
    );
    const writes: Promise<unknown>[] = [];
    const published = new Map<number, string>();
    for (let i = 0; i < AGENT_VIEW_SHARDS; i++) {
      const shard = shards.get(i);
      const key = keys.agentFrontends(this.o.cluster, this.o.node, i);
      if (!shard) {
        if (always || this.publishedShards.has(i)) writes.push(this.o.etcd.delete().key(key).exec());
        continue;
      }
      // Compared as plain JSON; validated (encodeValue: the same text) only when it is written.
      const value = JSON.stringify(shard);
      published.set(i, value);
      if (always || this.publishedShards.get(i) !== value) writes.push(lease.put(key).value(encodeValue(AgentFrontendShard, shard)).exec());
    }
    await Promise.all(writes);
    this.publishedShards = published;
    const failures = [...this.failures()];
    const failing: NonNullable<AgentView['failing']> = {};
    for (const [k, f] of failures.slice(0, AGENT_VIEW_MAX)) failing[k] = f;
    const ejected = this.ejections();
    const view: AgentView = {
      node: this.o.node,
      at: new Date().toISOString(),
      frontends: all.length,
      backends: all.reduce((n, p) => n + p.backends.length, 0),
      reconciles: this.syncs,
      lastReconcileMs: Math.round(this.lastSyncMs * 10) / 10,
      programmed: {},
      truncated: false,
      shards: AGENT_VIEW_SHARDS,
      failing,
      failures: failures.length,
      ejected: ejected.slice(0, AGENT_VIEW_MAX),
      ejectedCount: ejected.length,
      workload: this.workloadView?.(),
    };
    const { at: _at, ...content } = view;
    const fingerprint = JSON.stringify({ ...content, reconciles: 0, lastReconcileMs: 0 });
    if (fingerprint === this.published && !always && writes.length === 0) return;
    await lease.put(keys.agent(this.o.cluster, this.o.node)).value(encodeValue(AgentView, view));
    this.published = fingerprint;
  }

  private claimedByOther(id: string, k: string): boolean {
    for (const [other, set] of this.frontendsOf) if (other !== id && set.has(k)) return true;
    return false;
  }

  private unprogram(k: string, service: string): void {
    const p = this.programmed.get(k);
    if (!p) return;
    try {
      this.o.lb.deleteService(p.frontend);
    } catch (err) {
      // Still programmed: a full pass (REMOVALS' retry) finds it unclaimed and removes it again.
      this.scheduleRetry(REMOVALS, this.failed(k, REMOVALS, `removal:${service}`, err));
      return;
    }
    this.programmed.delete(k);
    this.updates++;
    this.succeeded(k);
  }

  dump(): Programmed[] {
    return [...this.programmed.values()].sort((a, b) => fkey(a).localeCompare(fkey(b)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.publishTimer);
    clearInterval(this.healthTimer);
    clearInterval(this.signalTimer);
    clearTimeout(this.routesRetry);
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
    await this.cancelWatchers();
    // The view goes with the agent; the datapath it programmed (pinned maps, routes) stays for the next agent.
    await this.viewLease.close();
  }
}
