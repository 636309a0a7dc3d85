// The slice of etcd3 a lease holder uses, in memory: lease(), put on a lease, delete, revoke, and a lease's
// `lost`. For unit tests of the mesh and sync layers; nothing here runs in production.
import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { EtcdRef } from '../etcd.js';

/** What an unreachable etcd answers. */
export const UNAVAILABLE = '14 UNAVAILABLE: connect ECONNREFUSED';

/**
 * Keys land in `kv.data` (pass the store a test reads the rest of the mesh etcd from); a key is on the lease
 * that put it last and goes when that lease is revoked or expires.
 */
export class MemoryLeaseEtcd {
  readonly leases: MemoryLease[] = [];
  /** Key → the lease it is on. */
  readonly on = new Map<string, MemoryLease>();
  /** Every put on a lease, as `key=value`. */
  readonly puts: string[] = [];
  /** While set, every call fails like an unreachable etcd. */
  down = false;
  constructor(readonly kv: { readonly data: Map<string, string> } = { data: new Map() }) {}

  get data(): Map<string, string> {
    return this.kv.data;
  }

  lease(_ttlSeconds: number, _options?: object): MemoryLease {
    const l = new MemoryLease(this, this.leases.length + 1);
    this.leases.push(l);
    return l;
  }

  delete() {
    return {
      key: (key: string): Promise<void> => {
        if (this.down) return Promise.reject(new Error(UNAVAILABLE));
        this.on.delete(key);
        this.kv.data.delete(key);
        return Promise.resolve();
      },
    };
  }

  /** As the holders take it: a getter of the client (the fake covers only what holders call). */
  readonly ref: EtcdRef = () => this as unknown as Etcd3;

  /** The live lease (neither revoked nor expired) `key` is on, if any. */
  leaseOf(key: string): MemoryLease | undefined {
    const l = this.on.get(key);
    return l?.state === 'alive' ? l : undefined;
  }

  /** The keys on lease `l`. */
  keysOf(l: MemoryLease): string[] {
    return [...this.on].filter(([, on]) => on === l).map(([k]) => k);
  }
}

export class MemoryLease extends EventEmitter {
  state: 'alive' | 'expired' | 'revoked' = 'alive';
  constructor(
    private readonly etcd: MemoryLeaseEtcd,
    readonly id: number,
  ) {
    super();
  }

  put(key: string) {
    return {
      value: (value: string) => {
        const done = this.etcd.down ? Promise.reject(new Error(UNAVAILABLE)) : this.state !== 'alive' ? Promise.reject(new Error('etcdserver: requested lease not found')) : Promise.resolve(this.store(key, value));
        return Object.assign(done, { exec: () => done });
      },
    };
  }

  async revoke(): Promise<void> {
    this.state = 'revoked';
    this.dropKeys();
  }

  revoked(): boolean {
    return this.state !== 'alive';
  }

  /** etcd let it expire (no keep-alive for its TTL: the holder is dead or cut off): its keys go. */
  expire(): void {
    this.state = 'expired';
    this.dropKeys();
  }

  /** What etcd3 tells a live holder whose lease expired: `lost`. */
  lose(): void {
    this.expire();
    this.emit('lost', new Error('lease expired'));
  }

  private store(key: string, value: string): void {
    this.etcd.on.set(key, this);
    this.etcd.kv.data.set(key, value);
    this.etcd.puts.push(`${key}=${value}`);
  }

  private dropKeys(): void {
    for (const key of this.etcd.keysOf(this)) {
      this.etcd.on.delete(key);
      this.etcd.kv.data.delete(key);
    }
  }
}
