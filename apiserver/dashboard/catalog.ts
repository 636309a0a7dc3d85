// The dashboard's in-memory copy of what it shows from the mesh etcd: every global service of this cluster
// and of each remote's cache, the node agents' views (headers and frontend shards, mesh/agent-view.ts) and
// the trust bundles. Listed once (paged) and then
// followed by watches, so a page of 10,000 services costs a lookup, not an etcd read; any watch error
// relists everything at a new revision. Read-only: it never writes the etcd.
import { X509Certificate } from 'node:crypto';
import type { IKeyValue } from 'etcd3';
import type { Logger } from 'pino';
import { listPrefixes, type EtcdRef } from '../../mesh/etcd.js';
import { openWatch, type MeshWatch } from '../../mesh/etcd-watch.js';
import { CACHE_ROOT, keys, parseExportKey } from '../../mesh/schema/keys.js';
import { decodeJson, decodeValue, GlobalService, TrustBundle } from '../../mesh/schema/values.js';
import { AgentViews } from '../../mesh/agent-view.js';
import { backoffDelay } from '../../mesh/backoff.js';

export interface BundleInfo {
  trustDomain: string;
  cluster: string;
  own: boolean;
  notAfter?: string;
}

/** Change notifications are coalesced to at most one per this interval (a relist or a burst of writes). */
const NOTIFY_EVERY_MS = 100;

export class Catalog {
  /** namespace/name → cluster → its export (local) or cached copy (remote). */
  readonly services = new Map<string, Map<string, GlobalService>>();
  /** Every node agent's view, and who uses each frontend now. */
  readonly agents: AgentViews;
  readonly bundles = new Map<string, BundleInfo>();
  private sortedNames?: string[];
  private watches: MeshWatch[] = [];
  private stopped = false;
  private failures = 0;
  private timer?: NodeJS.Timeout;
  private listeners = new Set<() => void>();
  private pending?: NodeJS.Timeout;
  version = 0;

  constructor(private readonly o: { etcd: EtcdRef; cluster: string; log: Logger }) {
    this.agents = new AgentViews(o.cluster);
  }

  private get prefixes(): string[] {
    return [keys.kindPrefix(this.o.cluster, 'services'), CACHE_ROOT, ...this.agents.prefixes, keys.bundlesPrefix(this.o.cluster)];
  }

  start(): void {
    void this.resync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.pending);
    await Promise.all(this.watches.map((w) => w.cancel()));
  }

  /** Called (coalesced) after anything the dashboard shows changed. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Every global service name, sorted; recomputed only after a service came or went. */
  names(): readonly string[] {
    return (this.sortedNames ??= [...this.services.keys()].sort());
  }

  /** Applies one key's value (undefined: deleted), telling the listeners when it changed what they show. */
  apply(key: string, value: string | undefined): void {
    if (this.set(key, value)) this.changed();
  }

  /** Whether anything the dashboard shows changed. */
  private set(key: string, value: string | undefined): boolean {
    const bundlesPrefix = keys.bundlesPrefix(this.o.cluster);
    if (this.agents.prefixes.some((p) => key.startsWith(p))) return this.agents.apply(key, value);
    if (key.startsWith(bundlesPrefix)) {
      const domain = key.slice(bundlesPrefix.length);
      const bundle = value === undefined ? undefined : decodeJson(TrustBundle, value);
      return bundle ? (this.bundles.set(domain, bundleInfo(bundle)), true) : this.bundles.delete(domain);
    }
    const parsed = parseExportKey(key, 'export') ?? parseExportKey(key, 'cache');
    if (parsed?.kind !== 'services') return false;
    const name = `${parsed.namespace}/${parsed.name}`;
    const decoded = value === undefined ? undefined : decodeValue(parsed, value);
    const byCluster = this.services.get(name);
    if (decoded?.ok && decoded.kind === 'services') {
      if (!byCluster) this.sortedNames = undefined;
      (byCluster ?? this.services.set(name, new Map()).get(name)!).set(parsed.cluster, decoded.value);
      return true;
    }
    if (!byCluster?.delete(parsed.cluster)) return false;
    if (byCluster.size === 0) {
      this.services.delete(name);
      this.sortedNames = undefined;
    }
    return true;
  }

  private changed(): void {
    this.version++;
    this.pending ??= setTimeout(() => {
      this.pending = undefined;
      for (const fn of this.listeners) fn();
    }, NOTIFY_EVERY_MS);
  }

  private async resync(): Promise<void> {
    if (this.stopped) return;
    await Promise.all(this.watches.map((w) => w.cancel()));
    this.watches = [];
    try {
      const client = this.o.etcd();
      const { kvs, revision } = await listPrefixes(client, this.prefixes);
      this.services.clear();
      this.agents.clear();
      this.bundles.clear();
      this.sortedNames = undefined;
      for (const kv of kvs) this.set(kv.key.toString(), kv.value.toString());
      this.changed();
      for (const prefix of this.prefixes) {
        const w = await openWatch(client, { prefix }, revision + 1);
        this.watches.push(w);
        w.watcher.on('put', (kv: IKeyValue) => this.apply(kv.key.toString(), kv.value.toString()));
        w.watcher.on('delete', (kv: IKeyValue) => this.apply(kv.key.toString(), undefined));
        w.watcher.on('error', (err: Error) => this.retry(err));
      }
      this.failures = 0;
    } catch (err) {
      this.retry(err as Error);
    }
  }

  private retry(err: Error): void {
    if (this.stopped || this.timer) return;
    this.failures++;
    if (this.failures === 1 || this.failures % 20 === 0) this.o.log.warn({ err: err.message, attempt: this.failures }, 'dashboard: mesh etcd list/watch failed, relisting');
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.resync();
    }, backoffDelay(this.failures - 1, { minMs: 250, maxMs: 5_000 }));
  }
}

/** A bundle as the dashboard shows it: who owns it and when its CA expires (never the PEM itself). */
function bundleInfo(b: TrustBundle): BundleInfo {
  let notAfter: string | undefined;
  try {
    notAfter = new Date(new X509Certificate(b.caPem).validTo).toISOString();
  } catch {
    notAfter = undefined; // an unreadable certificate shows without an expiry rather than hiding the bundle
  }
  return { trustDomain: b.trustDomain, cluster: b.cluster, own: b.own, ...(notAfter ? { notAfter } : {}) };
}
