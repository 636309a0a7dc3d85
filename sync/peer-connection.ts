// The connection to one peer's mesh etcd and its lifecycle, apart from what is replicated over it (as in
// Cilium's clustermesh, where the remote cluster's connection runs a sync function it is handed): connect
// with the identity the link holds, run the replication until it watches, start over with capped backoff
// when it fails or its watch ends, and follow the renewed identities the peer issues us — switching to one
// moves the watch to a new client from the last applied revision, without a relist.
import { X509Certificate } from 'node:crypto';
import { backoffDelay, type BackoffOptions } from '../mesh/backoff.js';
import { Credential, credentialKey } from '../mesh/credentials.js';
import { keys } from '../mesh/schema/keys.js';
import type { PeerSource, PeerWatch } from './peer-source.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export interface RemoteSpec {
  name: string;
  id: number;
  endpoint: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** The peer's pod CIDRs as `skein connect` pinned them: all it may claim pod addresses in. */
  podCidrs: string[];
}

/** What is replicated over the connection, handed to it. */
export interface Replication {
  /** Catches up (list and apply) and watches from there; resolves once watching, throws to be retried. */
  sync(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch>;
  /** Watches over another source from where the current watch is (a renewed identity): no relist. */
  resume(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch>;
}

export interface PeerConnectionOptions {
  remote: RemoteSpec;
  localCluster: string;
  replication: Replication;
  connect: (remote: RemoteSpec) => PeerSource;
  log: Log;
  /** The latest failure, for status. */
  onError: (message: string) => void;
  /** After switching to a renewed identity, so it can be stored for the next start. */
  onCredentials?: (cred: Credential) => void;
  /** Delays between failed attempts (default 200 ms doubling to 5 s). */
  retry?: BackoffOptions;
}

const RETRY: BackoffOptions = { minMs: 200, maxMs: 5_000 };

export class PeerConnection {
  rotations = 0;
  private current: RemoteSpec;
  private source?: PeerSource;
  private watch?: PeerWatch;
  private credWatch?: PeerWatch;
  /** The running sync loop: one at a time; a watch failing meanwhile asks it to go round again. */
  private loop?: Promise<void>;
  private again = false;
  private rotating = false;
  private stopped = false;

  constructor(private readonly o: PeerConnectionOptions) {
    this.current = o.remote;
  }

  /** The link as in use: the identity is the latest adopted. */
  get spec(): RemoteSpec {
    return this.current;
  }

  get identityExpires(): string | undefined {
    try {
      return new Date(new X509Certificate(this.current.certPem).validTo).toISOString();
    } catch {
      return undefined; // not a certificate we can read: status leaves the field out
    }
  }

  start(): void {
    this.source = this.o.connect(this.current);
    this.resync();
  }

  /**
   * Switches to a renewed identity: a new client, proven with one read, takes over the watch from the last
   * applied revision. Only while watching: before the first sync or during a relist there is no revision to
   * resume from, and every sync ends by reading the current credential anyway.
   */
  async adopt(raw: string | Credential): Promise<void> {
    const parsed = Credential.safeParse(typeof raw === 'string' ? parseJson(raw) : raw);
    if (!parsed.success || parsed.data.certPem === this.current.certPem || this.rotating || this.stopped || !this.watch) return;
    this.rotating = true;
    const next = { ...this.current, certPem: parsed.data.certPem, keyPem: parsed.data.keyPem };
    let source: PeerSource | undefined;
    let switched = false;
    try {
      source = this.o.connect(next); // throws on unusable key material
      await source.get(keys.config(next.name));
      const renewed = source;
      await this.openWatch((failed) => this.o.replication.resume(renewed, failed));
      if (this.stopped) {
        // stop() ran meanwhile and closed the old client only: leave nothing open.
        await this.dropWatch();
        renewed.close();
        return;
      }
      const old = this.source;
      this.source = source;
      this.current = next;
      switched = true;
      old?.close();
      this.rotations++;
      this.o.log.info({ remote: next.name, expires: this.identityExpires }, 'switched to a renewed identity');
      this.o.onCredentials?.(parsed.data);
      await this.followCredentials();
    } catch (err) {
      if (!switched) source?.close();
      this.o.onError(`identity renewal: ${(err as Error).message}`);
    } finally {
      this.rotating = false;
    }
  }

  /** Relists now: the cache lost state that the watch, bringing changes only, would not bring back. */
  relist(): void {
    if (this.source && !this.stopped) this.resync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.dropWatch();
    await this.credWatch?.cancel();
    this.credWatch = undefined;
    this.source?.close();
  }

  /** Runs the sync loop, or has the running one go round once more. */
  private resync(): void {
    if (this.loop) {
      this.again = true;
      return;
    }
    this.loop = (async () => {
      do {
        await this.syncUntilWatching();
      } while (this.again && !this.stopped);
    })().finally(() => (this.loop = undefined));
  }

  /** List, apply, watch; on failure back off and do it again. */
  private async syncUntilWatching(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        // Whatever failed before this attempt is replaced by it.
        await this.dropWatch();
        this.again = false;
        await this.openWatch((failed) => this.o.replication.sync(this.source!, failed));
        await this.followCredentials();
        if (this.stopped) await this.dropWatch(); // stopped while syncing: leave nothing behind
        return;
      } catch (err) {
        if (this.stopped) return; // stop() closed the client under it
        this.o.onError((err as Error).message);
        if (attempt === 0 || attempt % 10 === 0) this.o.log.warn({ remote: this.current.name, err: (err as Error).message, attempt }, 'remote sync failed, retrying');
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, this.o.retry ?? RETRY)));
      }
    }
  }

  /**
   * Opens a watch through `open` and makes it the current one (cancelling the previous). Only the current
   * watch's end starts a relist: a replaced one's late failure is not news.
   */
  private async openWatch(open: (failed: (err: Error) => void) => Promise<PeerWatch>): Promise<void> {
    const mine: { watch?: PeerWatch; failedEarly?: Error } = {};
    const watch = await open((err) => {
      if (!mine.watch) mine.failedEarly = err;
      else if (mine.watch === this.watch) this.watchFailed(err);
    });
    if (mine.failedEarly) {
      await watch.cancel();
      throw mine.failedEarly;
    }
    mine.watch = watch;
    const old = this.watch;
    this.watch = watch;
    await old?.cancel();
  }

  private watchFailed(err: Error): void {
    if (this.stopped) return;
    // Compaction (or a dropped watch the client gave up on): relist and diff, then watch again.
    this.o.onError(err.message);
    this.o.log.warn({ remote: this.current.name, err: err.message }, 'remote watch failed, relisting');
    this.resync();
  }

  private async dropWatch(): Promise<void> {
    const old = this.watch;
    this.watch = undefined;
    await old?.cancel();
  }

  /** The peer re-issues our identity at half-life under a key only we can read. */
  private async followCredentials(): Promise<void> {
    const source = this.source!;
    const key = credentialKey(this.current.name, this.o.localCluster);
    const old = this.credWatch;
    this.credWatch = undefined;
    await old?.cancel();
    this.credWatch = await source.watchKey(key, (value) => void this.adopt(value));
    const current = await source.get(key).catch(() => null);
    if (current) await this.adopt(current);
  }
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined; // not a credential: safeParse refuses it
  }
}
