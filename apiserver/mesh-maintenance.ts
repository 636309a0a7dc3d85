// Keeps the mesh etcd's history and file bounded however etcd was started (no --auto-compaction needed), as
// kube-apiserver's compactor does for its etcd: every interval, compact to the revision observed one
// interval earlier, so a watcher at most one interval behind can still resume (the sync and the agents
// relist after a compaction anyway), and defragment when most of the file is free space.
//
// One compactor per etcd, without leader election: kube-apiserver's compact_rev_key protocol. Each tick an
// instance puts one key only if the key's version is still the one it saw last (a compare-and-swap); the
// winner compacts to the revision it observed a tick earlier, a loser learns the current version and
// revision and tries again next tick. Two apiservers (a rolling update) thus compact once per interval
// between them, and when the compactor dies another takes over within two intervals. The presence lease
// (export/presence.ts) is no election: every instance holds its own.
import type { Etcd3 } from 'etcd3';
import type { EtcdRef } from '../mesh/etcd.js';
import { keys } from '../mesh/schema/keys.js';
import type { Metrics } from './metrics.js';


export interface DbStatus {
  /** Bytes of the database file. */
  dbSize: number;
  /** Bytes in use (etcd ≥ 3.4; 0 when the member does not report it). Freed pages show after the next commit. */
  dbSizeInUse: number;
}

/** The slice of etcd maintenance needs (tests use a fake). */
export interface MaintenanceTarget {
  /** Puts `key` = `value` if its version is `version`; the store revision after the call, and the key's version now. */
  claim(key: string, version: number, value: string): Promise<{ won: boolean; version: number; revision: number }>;
  compact(revision: number): Promise<void>;
  status(): Promise<DbStatus>;
  defragment(): Promise<void>;
}

/** Defragmenting blocks the member and takes about a second per hundreds of MiB in use: more than the 5 s unary deadline allows. */
const DEFRAG_DEADLINE_MS = 120_000;

export function etcdMaintenanceTarget(etcd: EtcdRef): MaintenanceTarget {
  return {
    async claim(key, version, value) {
      const c: Etcd3 = etcd();
      const res = await c.if(key, 'Version', '==', version).then(c.put(key).value(value)).else(c.get(key)).commit();
      const revision = Number(res.header.revision);
      if (res.succeeded) return { won: true, version: version + 1, revision };
      const kv = res.responses[0]?.response_range?.kvs[0];
      return { won: false, version: kv ? Number(kv.version) : 0, revision };
    },
    async compact(revision) {
      await etcd().kv.compact({ revision });
    },
    async status() {
      const s = await etcd().maintenance.status();
      return { dbSize: Number(s.dbSize), dbSizeInUse: Number(s.dbSizeInUse) };
    },
    async defragment() {
      await etcd().maintenance.defragment({ deadline: new Date(Date.now() + DEFRAG_DEADLINE_MS) });
    },
  };
}

type MaintenanceMetrics = Pick<Metrics, 'meshEtcdCompactedRevision' | 'meshEtcdDbSize' | 'meshEtcdDbSizeInUse' | 'meshEtcdDefrags' | 'meshEtcdMaintenanceErrors'>;

export interface MeshMaintenanceOptions {
  target: MaintenanceTarget;
  cluster: string;
  intervalMs: number;
  /** Defragment only when at least this much of the file is free... */
  defragMinFreeBytes: number;
  /** ...and more than this share of it (default 0.5). */
  defragFreeRatio?: number;
  /**
   * False turns defragmentation off: with several etcd members, status and defragment reach only the one
   * the client happens to pick, and each member must be defragmented on its own (compaction is cluster-wide).
   */
  defrag: boolean;
  metrics: MaintenanceMetrics;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
}

/** etcd refuses a compaction at or below one already done (another compactor, or etcd's own auto-compaction). */
const isAlreadyCompacted = (err: Error) => /required revision has been compacted/.test(err.message);

export class MeshMaintenance {
  /** The CAS key's version as this instance last saw it. */
  private version = 0;
  /** The store revision seen at the previous tick: what the next winning tick compacts to (0: none yet). */
  private observed = 0;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly key: string;

  constructor(private readonly o: MeshMaintenanceOptions) {
    this.key = keys.compactRevision(o.cluster);
  }

  /** A first tick now (it only observes the revision), then one per interval. */
  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One interval's work. Never rejects: a failed step is logged, counted and tried again next interval. */
  tick(): Promise<void> {
    // A defrag outlasting the interval: this interval's tick is skipped, not stacked.
    if (this.running) return this.running;
    this.running = this.run().finally(() => (this.running = undefined));
    return this.running;
  }

  private async run(): Promise<void> {
    // Taken before this tick's compaction: etcd reports pages freed by a compaction only after a later
    // commit, so this reflects the previous intervals' compactions (heartbeats commit every few seconds).
    const before = await this.step('status', () => this.status());
    const previous = this.observed;
    const claim = await this.step('claim', () => this.o.target.claim(this.key, this.version, String(previous)));
    if (!claim) return; // `observed` stays older: compacting to it later is only more conservative
    this.version = claim.version;
    this.observed = claim.revision;
    if (!claim.won) return; // another instance compacts this interval
    if (previous > 0) await this.compact(previous);
    if (before && this.worthDefrag(before)) await this.defragment(before);
  }

  private async compact(revision: number): Promise<void> {
    try {
      await this.o.target.compact(revision);
    } catch (err) {
      if (!isAlreadyCompacted(err as Error)) return this.failed('compact', err);
    }
    this.o.metrics.meshEtcdCompactedRevision.set(revision);
    this.o.log.info({ revision }, 'mesh etcd compacted');
  }

  private worthDefrag(s: DbStatus): boolean {
    if (!this.o.defrag || s.dbSizeInUse <= 0) return false; // dbSizeInUse 0: an etcd before 3.4 does not say
    const free = s.dbSize - s.dbSizeInUse;
    return free > this.o.defragMinFreeBytes && free > s.dbSize * (this.o.defragFreeRatio ?? 0.5);
  }

  private async defragment(before: DbStatus): Promise<void> {
    const t0 = Date.now();
    const done = await this.step('defrag', async () => {
      await this.o.target.defragment();
      return true;
    });
    if (!done) return;
    this.o.metrics.meshEtcdDefrags.inc();
    const after = await this.step('status', () => this.status());
    this.o.log.info({ before, after, ms: Date.now() - t0 }, 'mesh etcd defragmented');
  }

  private async status(): Promise<DbStatus> {
    const s = await this.o.target.status();
    this.o.metrics.meshEtcdDbSize.set(s.dbSize);
    this.o.metrics.meshEtcdDbSizeInUse.set(s.dbSizeInUse);
    return s;
  }

  private async step<T>(step: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      this.failed(step, err);
      return undefined;
    }
  }

  private failed(step: string, err: unknown): void {
    this.o.metrics.meshEtcdMaintenanceErrors.inc({ step });
    this.o.log.warn({ step, err: (err as Error).message }, 'mesh etcd maintenance step failed; retried next interval');
  }
}
