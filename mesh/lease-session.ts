// A lease session, after etcd's Go `concurrency.Session`: one lease kept alive for as long as its holder
// runs, so the keys put on it vanish with the process (revoked on close, expired after a crash). etcd3 gives
// a lease up for good when it cannot keep it alive (`lost`: etcd unreachable for two TTLs, or the lease
// revoked or expired behind our back); the session then grants a new one and hands it to the holder's
// onNewLease to put its keys again. Bound to an EtcdRef: move() re-homes it on a replaced client.
import type { Lease } from 'etcd3';
import type { EtcdRef } from './etcd.js';
import { backoffDelay } from './backoff.js';

interface LeaseSessionOptions {
  etcd: EtcdRef;
  ttlSeconds: number;
  /** Puts the holder's keys on a new lease (the first and every replacement); a rejection fails that lease. */
  onNewLease: (lease: Lease) => Promise<void>;
  /** The lease in use was lost; a replacement follows after retryMs. */
  onLost?: (err: Error) => void;
  /** A replacement after a loss failed; retried with backoff until one holds. */
  onRetry?: (err: Error, attempt: number) => void;
  /** First delay before a replacement, doubled per failed attempt up to maxRetryMs (500 ms, 5 s). */
  retryMs?: number;
  maxRetryMs?: number;
}

export class LeaseSession {
  private current?: Lease;
  private opened = false;
  private closed = false;
  private regrantTimer?: NodeJS.Timeout;
  private failedRegrants = 0;
  /** Lease set-ups run one at a time, so a move and a regrant never race to become current. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: LeaseSessionOptions) {}

  /** The live lease; undefined before open(), between a loss and its replacement, and after close(). */
  get lease(): Lease | undefined {
    return this.current;
  }

  /** Grants a lease and puts the holder's keys on it. A failure rejects and leaves nothing behind: call again. */
  open(): Promise<void> {
    this.opened = true;
    return this.replace();
  }

  /** The client behind the EtcdRef was replaced: a new lease there, the holder's keys on it, then the old one revoked. */
  move(): Promise<void> {
    return this.opened && !this.closed ? this.replace() : Promise.resolve();
  }

  /** Revokes the lease: its keys are gone at once, not after the TTL. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.regrantTimer);
    const lease = this.current;
    this.current = undefined;
    if (lease) await this.retire(lease);
  }

  private replace(): Promise<void> {
    const run = this.chain.then(() => this.setUp());
    this.chain = run.catch(() => undefined); // the caller of replace() gets the error
    return run;
  }

  private async setUp(): Promise<void> {
    if (this.closed) return;
    const lease = this.o.etcd().lease(this.o.ttlSeconds, { autoKeepAlive: true });
    lease.on('lost', (err: Error) => this.lost(lease, err));
    try {
      await this.o.onNewLease(lease);
      if (lease.revoked()) throw new Error('mesh etcd lease lost while its keys were put');
    } catch (err) {
      await this.retire(lease);
      throw err;
    }
    if (this.closed) return this.retire(lease); // closed while the keys went on: they go with it
    const old = this.current;
    this.current = lease;
    clearTimeout(this.regrantTimer);
    this.failedRegrants = 0;
    if (old) await this.retire(old);
  }

  private lost(lease: Lease, err: Error): void {
    if (lease !== this.current || this.closed) return; // a lease being set up or retired reports through its caller
    this.current = undefined;
    this.o.onLost?.(err);
    this.scheduleRegrant();
  }

  private scheduleRegrant(): void {
    const base = this.o.retryMs ?? 500;
    const delay = backoffDelay(this.failedRegrants, { minMs: base, maxMs: this.o.maxRetryMs ?? 5_000 });
    this.regrantTimer = setTimeout(() => {
      this.replace().catch((err: Error) => {
        this.failedRegrants++;
        this.o.onRetry?.(err, this.failedRegrants);
        if (!this.current && !this.closed) this.scheduleRegrant();
      });
    }, delay);
    this.regrantTimer.unref();
  }

  /** Stops listening and revokes; a failed revoke is left to the TTL. */
  private async retire(lease: Lease): Promise<void> {
    lease.removeAllListeners('lost');
    await lease.revoke().catch(() => undefined); // etcd unreachable: the lease expires after its TTL anyway
  }
}
