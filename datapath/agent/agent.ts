// The node agent: follows its own cluster's mesh etcd only (the local export, every remote's cached copy
// and their sync health), computes each service's active backends, and programs the BPF socket LB with
// the difference. It lists the mesh prefix once (paginated), then follows a watch from that revision into
// an in-memory merged view; a change recomputes only the services it touched, and bursts are coalesced.
// A broken watch (etcd down, history compacted) ends in a fresh listing that recomputes everything.
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { LeaseSession } from '../../mesh/lease-session.js';
import { datapathPrefixes, keys } from '../../mesh/schema/keys.js';
import { AGENT_VIEW_MAX, AgentView, encodeValue } from '../../mesh/schema/values.js';
import { loadMergedView, type MergedView } from './merged-view.js';
import type { Programmed, SocketLb } from '../socket-lb.js';
import { activeBackends } from './policy.js';
import { backoffDelay } from '../../mesh/backoff.js';

const fkey = (p: Programmed) => `${p.frontend.proto}/${p.frontend.ip}:${p.frontend.port}`;
const bkey = (p: Programmed) => p.backends.map((b) => `${b.ip}:${b.port}`).sort().join(',');

export class NodeAgent {
  private readonly programmed = new Map<string, Programmed>();
  /** Service id → the frontends it programmed, so a service that goes or changes ClusterIP is cleaned up. */
  private readonly frontendsOf = new Map<string, Set<string>>();
  private view?: MergedView;
  private watchers: Watcher[] = [];
  private running = false;
  private dirty = false;
  /** Services to recompute; `all` after a (re)listing. */
  private pending: Set<string> | 'all' = 'all';
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  syncs = 0;
  updates = 0;
  lastSyncMs = 0;

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

  constructor(private readonly o: { etcd: Etcd3; cluster: string; node: string; lb: SocketLb; log: { warn: (o: object, m: string) => void } }) {}

  async start(): Promise<void> {
    for (const p of this.o.lb.adopt()) this.programmed.set(fkey(p), p);
    await this.follow();
    await this.idle();
  }

  /** Lists the mesh prefix into a new view and watches from its revision; retried until it works. */
  private async follow(): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      try {
        const { view, revision } = await loadMergedView(this.o.etcd, this.o.cluster);
        // One watch per prefix the node's etcd role may read (a watch of the whole mesh prefix is refused).
        const watchers = await Promise.all(datapathPrefixes(this.o.cluster).map((p) => this.o.etcd.watch().prefix(p).startRevision(String(revision + 1)).create()));
        for (const watcher of watchers) {
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

  private async restart(watchers: Watcher[], err: Error): Promise<void> {
    if (watchers !== this.watchers || this.stopped) return;
    this.o.log.warn({ err: err.message }, 'mesh etcd watch broke; listing again');
    await this.cancelWatchers();
    await this.follow();
  }

  private async cancelWatchers(): Promise<void> {
    const old = this.watchers;
    this.watchers = [];
    await Promise.all(old.map((w) => w.cancel().catch(() => {})));
  }

  private onChange(view: MergedView, key: string, value: string | undefined): void {
    // The agents' own views carry no datapath state (and reacting to them would loop).
    if (view !== this.view || key.startsWith(keys.agentsPrefix(this.o.cluster))) return;
    const touched = view.apply(key, value);
    if (touched.length === 0) return;
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
    this.syncs++;
    this.lastSyncMs = performance.now() - t0;
    this.publishSoon();
  }

  private reconcileServices(view: MergedView, ids: Set<string>, all: boolean): void {
    for (const id of ids) {
      const m = view.get(id);
      const desired = new Map((m ? activeBackends(m) : []).map((p) => [fkey(p), p] as const));
      for (const [k, p] of desired) {
        const have = this.programmed.get(k);
        if (have && bkey(have) === bkey(p)) continue;
        this.o.lb.setService(p.frontend, p.backends);
        this.programmed.set(k, p);
        this.updates++;
      }
      // A ClusterIP can pass from a deleted service to a new one in the same pass: keep what another claims.
      for (const k of this.frontendsOf.get(id) ?? []) if (!desired.has(k) && !this.claimedByOther(id, k)) this.unprogram(k);
      if (desired.size) this.frontendsOf.set(id, new Set(desired.keys()));
      else this.frontendsOf.delete(id);
    }
    // After a full pass, whatever no service claims (adopted from a previous agent, or gone) is removed.
    if (all) {
      const claimed = new Set([...this.frontendsOf.values()].flatMap((s) => [...s]));
      for (const k of [...this.programmed.keys()]) if (!claimed.has(k)) this.unprogram(k);
    }
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

  /** The view onto the lease; unless `always` (a new lease), only when more than its counters changed. */
  private async putView(lease: Lease, always: boolean): Promise<void> {
    const all = this.dump();
    const programmed: Record<string, string[]> = {};
    for (const p of all.slice(0, AGENT_VIEW_MAX)) programmed[fkey(p)] = p.backends.map((b) => `${b.ip}:${b.port}`);
    const view: AgentView = {
      node: this.o.node,
      at: new Date().toISOString(),
      frontends: all.length,
      backends: all.reduce((n, p) => n + p.backends.length, 0),
      reconciles: this.syncs,
      lastReconcileMs: Math.round(this.lastSyncMs * 10) / 10,
      programmed,
      truncated: all.length > AGENT_VIEW_MAX,
    };
    const { at: _at, ...content } = view;
    const fingerprint = JSON.stringify({ ...content, reconciles: 0, lastReconcileMs: 0 });
    if (fingerprint === this.published && !always) return;
    await lease.put(keys.agent(this.o.cluster, this.o.node)).value(encodeValue(AgentView, view));
    this.published = fingerprint;
  }

  private claimedByOther(id: string, k: string): boolean {
    for (const [other, set] of this.frontendsOf) if (other !== id && set.has(k)) return true;
    return false;
  }

  private unprogram(k: string): void {
    const p = this.programmed.get(k);
    if (!p) return;
    this.o.lb.deleteService(p.frontend);
    this.programmed.delete(k);
    this.updates++;
  }

  dump(): Programmed[] {
    return [...this.programmed.values()].sort((a, b) => fkey(a).localeCompare(fkey(b)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.publishTimer);
    await this.cancelWatchers();
    // The view goes with the agent; the datapath it programmed stays (pinned) for the next agent.
    await this.viewLease.close();
  }
}
