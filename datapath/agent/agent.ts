// The node agent: follows its own cluster's mesh etcd only (the local export, every remote's cached copy
// and their sync health), computes each global service's active backends, and programs the BPF socket LB
// with the difference. Changes are coalesced: a burst of etcd events costs one recomputation.
import type { Etcd3, Watcher } from 'etcd3';
import { ROOT } from '../../apiserver/schema/keys.js';
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

  constructor(private readonly o: { etcd: Etcd3; cluster: string; lb: SocketLb; log: { warn: (o: object, m: string) => void } }) {}

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
    if (/\/heartbeat$/.test(key)) return; // heartbeats carry no datapath state
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
  }

  dump(): Programmed[] {
    return [...this.programmed.values()].sort((a, b) => fkey(a).localeCompare(fkey(b)));
  }

  async stop(): Promise<void> {
    await this.watcher?.cancel().catch(() => {});
  }
}
