// The node agent: follows its own cluster's mesh etcd only (the local export, every remote's cached copy
// and their sync health), computes each global service's active backends, and programs the BPF socket LB
// with the difference. Changes are coalesced: a burst of etcd events costs one recomputation.
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { keys, ROOT } from '../../apiserver/schema/keys.js';
import { AGENT_VIEW_MAX, AgentView, encodeValue } from '../../apiserver/schema/values.js';
import { mergedGlobalServices } from '../../sync/merged-view.js';
import type { Programmed, SocketLb } from '../socket-lb.js';
import { activeBackends } from './policy.js';

const fkey = (p: Programmed) => `${p.frontend.proto}/${p.frontend.ip}:${p.frontend.port}`;
const bkey = (p: Programmed) => p.backends.map((b) => `${b.ip}:${b.port}`).sort().join(',');

export class NodeAgent {
  private readonly programmed = new Map<string, Programmed>();
  private watcher?: Watcher;
  private running = false;
  private dirty = false;
  private idleWaiters: (() => void)[] = [];
  syncs = 0;
  updates = 0;
  lastSyncMs = 0;

  private lease?: Lease;
  private publishTimer?: NodeJS.Timeout;
  private published = '';

  constructor(private readonly o: { etcd: Etcd3; cluster: string; node: string; lb: SocketLb; log: { warn: (o: object, m: string) => void } }) {}

  async start(): Promise<void> {
    for (const p of this.o.lb.adopt()) this.programmed.set(fkey(p), p);
    this.watcher = await this.o.etcd.watch().prefix(`${ROOT}/`).create();
    this.watcher.on('put', (kv) => this.onChange(kv.key.toString()));
    this.watcher.on('delete', (kv) => this.onChange(kv.key.toString()));
    this.watcher.on('error', (err) => this.o.log.warn({ err: err.message }, 'mesh etcd watch failed'));
    this.schedule();
    await this.idle();
  }

  private onChange(key: string): void {
    // Heartbeats and the agents' own views carry no datapath state (and reacting to views would loop).
    if (/\/heartbeat$/.test(key) || key.startsWith(keys.agentsPrefix(this.o.cluster))) return;
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
    const t0 = performance.now();
    const merged = await mergedGlobalServices(this.o.etcd, this.o.cluster);
    const desired = new Map<string, Programmed>();
    for (const m of merged.values()) for (const p of activeBackends(m)) desired.set(fkey(p), p);
    for (const [k, p] of desired) {
      const have = this.programmed.get(k);
      if (have && bkey(have) === bkey(p)) continue;
      this.o.lb.setService(p.frontend, p.backends);
      this.programmed.set(k, p);
      this.updates++;
    }
    for (const [k, p] of this.programmed) {
      if (desired.has(k)) continue;
      this.o.lb.deleteService(p.frontend);
      this.programmed.delete(k);
      this.updates++;
    }
    this.syncs++;
    this.lastSyncMs = performance.now() - t0;
    this.publishSoon();
  }

  /** The node's view for `skein status`, at most once a second, on a lease so a dead agent's view expires. */
  private publishSoon(): void {
    if (this.publishTimer) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = undefined;
      void this.publish().catch((err: Error) => {
        this.o.log.warn({ err: err.message }, 'publishing the node view failed');
        this.lease = undefined;
      });
    }, 1000);
  }

  private async publish(): Promise<void> {
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
    if (fingerprint === this.published && this.lease) return;
    if (!this.lease) {
      this.lease = this.o.etcd.lease(15, { autoKeepAlive: true });
      this.lease.on('lost', () => (this.lease = undefined));
    }
    await this.lease.put(keys.agent(this.o.cluster, this.o.node)).value(encodeValue(AgentView, view));
    this.published = fingerprint;
  }

  dump(): Programmed[] {
    return [...this.programmed.values()].sort((a, b) => fkey(a).localeCompare(fkey(b)));
  }

  async stop(): Promise<void> {
    clearTimeout(this.publishTimer);
    await this.watcher?.cancel().catch(() => {});
    // The view goes with the agent; the datapath it programmed stays (pinned) for the next agent.
    await this.lease?.revoke().catch(() => {});
  }
}
