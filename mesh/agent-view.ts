// A node agent's published view in its cluster's mesh etcd, all on the agent's lease (gone with a dead
// agent): a small header (AgentView: counts, failures, ejections) and its programmed frontends spread by a
// stable hash over AGENT_VIEW_SHARDS keys (keys.agentFrontends). A frontend always lands in the same shard,
// so a change rewrites one small value, and nothing caps how many frontends are published (one value per
// node held 500 of them). The agent writes it (encodeAgentShards); skein-apiserver reads it (AgentViews:
// /v1/status, `skein status --node`, the dashboard), never the other way round.
import { keys, parseAgentFrontendsKey } from './schema/keys.js';
import { AGENT_VIEW_MAX, AgentFrontendShard, AgentView, decodeJson } from './schema/values.js';

/** Enough that a shard stays small at the datapath's 262,144 frontends (~4,000 each), few enough to list at once. */
export const AGENT_VIEW_SHARDS = 64;
/** A shard value's budget: half the state writer's 512 KiB per value, so a shard put always fits a request. */
const AGENT_SHARD_MAX_BYTES = 256 * 1024;

/** FNV-1a (32 bit) of the frontend key modulo the shard count: the same in every process and version. */
export function agentShardOf(frontend: string, shards = AGENT_VIEW_SHARDS): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < frontend.length; i++) h = Math.imul(h ^ frontend.charCodeAt(i), 0x01000193) >>> 0;
  return h % shards;
}

/**
 * The agent's side: its programmed frontends (PROTO/ip:port → backends ip:port) as the value of every
 * non-empty shard. A frontend that would take a shard past `maxBytes` is left out and counted (`omitted`).
 */
export function agentShards(node: string, programmed: Iterable<readonly [string, readonly string[]]>, shards = AGENT_VIEW_SHARDS, maxBytes = AGENT_SHARD_MAX_BYTES): Map<number, AgentFrontendShard> {
  const out = new Map<number, AgentFrontendShard & { bytes: number }>();
  for (const [frontend, backends] of programmed) {
    const shard = agentShardOf(frontend, shards);
    const s = out.get(shard) ?? out.set(shard, { node, shard, programmed: {}, omitted: 0, bytes: 64 + node.length }).get(shard)!;
    const bytes = frontend.length + 6 + backends.reduce((n, b) => n + b.length + 3, 0);
    if (s.bytes + bytes > maxBytes) s.omitted++;
    else {
      s.programmed[frontend] = [...backends];
      s.bytes += bytes;
    }
  }
  return new Map([...out].map(([i, { bytes: _bytes, ...s }]) => [i, s]));
}

/** An older agent's inline `programmed` is held as this shard. */
const INLINE = -1;

/**
 * The reader's side: every node's header and shards of one cluster, applied key by key (a listing, then a
 * watch), with an index of who uses each frontend kept up to date per shard, so neither a page of services
 * nor a live update walks every node's frontends.
 */
export class AgentViews {
  private readonly headers = new Map<string, AgentView>();
  private readonly shards = new Map<string, Map<number, AgentFrontendShard>>();
  /** Frontend → node → the backends that node balances it over now. */
  private readonly users = new Map<string, Map<string, readonly string[]>>();

  constructor(private readonly cluster: string) {}

  /** What to list and watch. */
  get prefixes(): string[] {
    return [keys.agentsPrefix(this.cluster), keys.agentFrontendsPrefix(this.cluster)];
  }

  /** Applies one key's value (undefined: deleted). False when the key is no agent view's or changed nothing. */
  apply(key: string, value: string | undefined): boolean {
    const headers = keys.agentsPrefix(this.cluster);
    if (key.startsWith(headers)) {
      const node = key.slice(headers.length);
      const view = value === undefined ? undefined : decodeJson(AgentView, value);
      if (!view) {
        this.setFrontends(node, INLINE, undefined);
        return this.headers.delete(node);
      }
      this.headers.set(node, view);
      this.setFrontends(node, INLINE, view.shards === undefined ? { node, shard: INLINE, programmed: view.programmed, omitted: 0 } : undefined);
      return true;
    }
    const at = parseAgentFrontendsKey(key, this.cluster);
    if (!at) return false;
    const shard = value === undefined ? undefined : decodeJson(AgentFrontendShard, value);
    // A value that names another node or shard than its key is not trusted to be either.
    const valid = shard?.node === at.node && shard.shard === at.shard ? shard : undefined;
    const had = this.shards.get(at.node)?.has(at.shard) ?? false;
    this.setFrontends(at.node, at.shard, valid);
    return had || valid !== undefined;
  }

  clear(): void {
    this.headers.clear();
    this.shards.clear();
    this.users.clear();
  }

  /** Nodes with a published header, sorted. */
  nodes(): string[] {
    return [...this.headers.keys()].sort();
  }

  /** A node's header as published (`programmed` empty for a sharded agent). */
  header(node: string): AgentView | undefined {
    return this.headers.get(node);
  }

  /** A node's programmed frontends from its current shards (those below its header's count), unsorted. */
  private frontendsOf(node: string): { entries: [string, readonly string[]][]; omitted: number } {
    const count = this.headers.get(node)?.shards ?? 0;
    const entries: [string, readonly string[]][] = [];
    let omitted = 0;
    for (const [i, s] of this.shards.get(node) ?? []) {
      if (i >= count && i !== INLINE) continue;
      entries.push(...Object.entries(s.programmed));
      omitted += s.omitted;
    }
    return { entries, omitted };
  }

  /** A node's view with its frontends assembled and sorted; the first `max` only (truncated beyond). */
  view(node: string, max = Infinity): AgentView | undefined {
    const header = this.headers.get(node);
    if (!header) return undefined;
    const { entries, omitted } = this.frontendsOf(node);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const shown = entries.slice(0, max);
    const inlineTruncated = header.shards === undefined && header.truncated;
    return { ...header, programmed: Object.fromEntries(shown.map(([f, b]) => [f, [...b]])), truncated: inlineTruncated || omitted > 0 || shown.length < entries.length };
  }

  /** Every node's view, by node name, each with at most `max` frontends (as /v1/status lists them). */
  views(max = AGENT_VIEW_MAX): AgentView[] {
    return this.nodes().flatMap((n) => this.view(n, max) ?? []);
  }

  /** Node → the backends it balances `frontend` over now (nodes with a header only). */
  usersOf(frontend: string): [string, readonly string[]][] {
    return [...(this.users.get(frontend) ?? [])].filter(([node]) => this.headers.has(node));
  }

  private setFrontends(node: string, shard: number, next: AgentFrontendShard | undefined): void {
    const byShard = this.shards.get(node);
    for (const frontend of Object.keys(byShard?.get(shard)?.programmed ?? {})) {
      const nodes = this.users.get(frontend);
      nodes?.delete(node);
      if (nodes?.size === 0) this.users.delete(frontend);
    }
    if (!next) {
      byShard?.delete(shard);
      if (byShard?.size === 0) this.shards.delete(node);
      return;
    }
    (byShard ?? this.shards.set(node, new Map()).get(node)!).set(shard, next);
    for (const [frontend, backends] of Object.entries(next.programmed)) (this.users.get(frontend) ?? this.users.set(frontend, new Map()).get(frontend)!).set(node, backends);
  }
}
