// What a connected peer may claim, decided per value before it reaches the local cache (and from there every
// node agent's BPF maps). A peer — or whoever holds its mesh etcd write credentials — must not be able to
// point our clients at loopback, a node, link-local/metadata (169.254.169.254), our own pods or services,
// or anything outside the pod CIDRs `skein connect` pinned for it; nor claim identities of another cluster.
//
// Addresses are parsed strictly by node:net's isIPv4 before any range arithmetic.
import { isIPv4 } from 'node:net';
import { parseCidr, type ClusterConfig, type Decoded } from './schema/values.js';
import { WRITE_LIMITS } from './state-writer.js';

/**
 * Why a remote key was refused; counted per reason in status and metrics. `too-large`: a value over the
 * size limit per value; `over-quota`: beyond the peer's quota of cached keys and bytes (sync/peer-quota.ts);
 * `bad-bundle`: a trust bundle for another trust domain than the peer's own, or with a CA that fails.
 */
export const REJECT_REASONS = ['foreign-key', 'schema', 'wrong-cluster-id', 'forbidden-address', 'local-cidr', 'outside-pinned-cidrs', 'too-large', 'over-quota', 'bad-bundle'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** How much of the local mesh etcd one peer may take (enforced at import: sync/peer-quota.ts). */
export interface RemoteQuota {
  /** Cached keys of one peer (health keys not counted). */
  maxKeys: number;
  /** Their key + value bytes. */
  maxBytes: number;
  /** One value larger than this is refused whatever the quota (`too-large`); below the writer's batch size. */
  maxValueBytes: number;
}

/**
 * The largest cluster Kubernetes supports (150,000 pods, 10,000 services, 5,000 nodes) exports about
 * 170,000 keys (one per pod IP, service, identity and node) in about 50 MiB: 200,000 keys and 128 MiB let it
 * through with room. A few peers at their quota still hold a fraction of etcd's default 2 GiB backend quota
 * (4 × 128 MiB = 512 MiB of live data), leaving room for the history kept until compaction. The value limit
 * is the one the local writer enforces anyway (mesh/state-writer.ts WRITE_LIMITS).
 */
export const REMOTE_QUOTA: Readonly<RemoteQuota> = { maxKeys: 200_000, maxBytes: 128 * 1024 * 1024, maxValueBytes: WRITE_LIMITS.maxValueBytes };

export interface Rejection {
  reason: RejectReason;
  /** Names the field, the value and what would have been allowed. */
  detail: string;
}

const toInt = (ip: string) => ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
const toIp = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/**
 * One IPv4 CIDR, host bits masked off. Membership is two integer comparisons: a peer's initial sync checks
 * every backend of every service against several ranges, and node:net's BlockList (≈2 µs a check) made
 * the 10,000-service sync 2.6× slower (measured in `npm run bench -- --only mesh`).
 */
export class Subnet {
  private readonly start: number;
  private readonly end: number;
  readonly first: string;
  readonly last: string;

  private constructor(
    readonly prefix: number,
    base: number,
  ) {
    const size = 2 ** (32 - prefix);
    this.start = base - (base % size);
    this.end = this.start + size - 1;
    this.first = toIp(this.start);
    this.last = toIp(this.end);
  }

  /** A strict CIDR (see parseCidr), or undefined. */
  static parse(text: string): Subnet | undefined {
    const c = parseCidr(text);
    return c && new Subnet(c.prefix, toInt(c.address));
  }

  /** Canonical text: the network address and the prefix. */
  get text(): string {
    return `${this.first}/${this.prefix}`;
  }

  contains(ip: string): boolean {
    if (!isIPv4(ip)) return false;
    const n = toInt(ip);
    return n >= this.start && n <= this.end;
  }

  /** Every address of `other` is in this subnet (CIDRs nest or are disjoint, so both ends decide). */
  covers(other: Subnet): boolean {
    return this.contains(other.first) && this.contains(other.last);
  }

  overlaps(other: Subnet): boolean {
    return this.contains(other.first) || other.contains(this.first);
  }
}

/** Never a pod, backend or node address, whoever claims it and whatever a pin says. */
const FORBIDDEN_RANGES: readonly { subnet: Subnet; what: string }[] = [
  ['0.0.0.0/8', 'unspecified ("this network")'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local (cloud metadata lives at 169.254.169.254)'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved or broadcast (255.255.255.255)'],
].map(([cidr, what]) => ({ subnet: Subnet.parse(cidr!)!, what: what! }));

/** The forbidden range an address or subnet falls in (or overlaps), named; undefined if none. */
export function forbiddenRangeOf(x: string | Subnet): string | undefined {
  const hit = FORBIDDEN_RANGES.find((r) => (typeof x === 'string' ? r.subnet.contains(x) : r.subnet.overlaps(x)));
  return hit && `${hit.what}, ${hit.subnet.text}`;
}

// ---- the pin `skein connect` stores in a link (Secret field pod-cidrs) ----

/** Why a comma-separated list of pod CIDRs cannot be pinned, or undefined if it can. */
export function pinError(text: string): string | undefined {
  const parts = text.split(',');
  if (text === '' || parts.length === 0) return 'no pod CIDRs: a peer is pinned to the pod CIDRs its nodes have (run skein connect once they have some)';
  for (const part of parts) {
    const s = Subnet.parse(part);
    if (!s) return `"${part}" is not an IPv4 CIDR such as 10.2.0.0/16`;
    if (s.text !== part) return `"${part}" has host bits set: write its network address, ${s.text}`;
    const forbidden = forbiddenRangeOf(s);
    if (forbidden) return `${part} overlaps ${forbidden}: never a pod network`;
  }
  return undefined;
}

/** The pin of a list of pod CIDRs: canonical, deduplicated, in address order, comma separated. */
export function formatPin(cidrs: string[]): string {
  const subnets = cidrs.map((c) => {
    const s = Subnet.parse(c);
    if (!s) throw new Error(`pod CIDR "${c}" is not an IPv4 CIDR such as 10.2.0.0/16`);
    return s;
  });
  subnets.sort((a, b) => toInt(a.first) - toInt(b.first) || a.prefix - b.prefix);
  return [...new Set(subnets.map((s) => s.text))].join(',');
}

export const parsePin = (text: string): string[] => (text ? text.split(',') : []);

// ---- the local cluster's own networks ----

/**
 * This cluster's pod CIDRs (from its own export config; they grow as nodes join) and Service CIDR (the
 * --service-cidr flag). A peer never claims them, whatever its pin says.
 */
export class LocalNetworks {
  private pods: Subnet[] = [];
  private readonly service?: Subnet;

  constructor(
    readonly cluster: string,
    serviceCidr?: string,
  ) {
    if (serviceCidr !== undefined) {
      this.service = Subnet.parse(serviceCidr);
      if (!this.service) throw new Error(`service CIDR "${serviceCidr}" is not an IPv4 CIDR such as 10.96.0.0/12`);
    }
  }

  get podCidrs(): string[] {
    return this.pods.map((s) => s.text);
  }

  /** Replaces the pod CIDRs (invalid entries are skipped); true if they changed. */
  setPodCidrs(cidrs: string[]): boolean {
    const next = cidrs.flatMap((c) => Subnet.parse(c) ?? []);
    const changed = next.map((s) => s.text).join(',') !== this.podCidrs.join(',');
    if (changed) this.pods = next;
    return changed;
  }

  /** Which of this cluster's networks an address or subnet falls in (or overlaps), named; else undefined. */
  claimedBy(x: string | Subnet): string | undefined {
    const hits = (s: Subnet) => (typeof x === 'string' ? s.contains(x) : s.overlaps(x));
    if (this.service && hits(this.service)) return `${this.cluster}'s own Service CIDR ${this.service.text}`;
    const pod = this.pods.find(hits);
    return pod && `${this.cluster}'s own pod CIDR ${pod.text}`;
  }
}

// ---- one peer's policy ----

/** Bits 16-23 of a security identity: the cluster that allocated it (Cilium's layout). */
export const clusterIdOf = (identity: number) => Math.floor(identity / 65536) % 256;

export class PeerPolicy {
  private readonly pinned: Subnet[];

  constructor(
    private readonly peer: { name: string; id: number; podCidrs: string[] },
    private readonly local: LocalNetworks,
  ) {
    this.pinned = peer.podCidrs.flatMap((c) => Subnet.parse(c) ?? []);
  }

  /** The first reason a decoded value may not be cached, or undefined if it may. */
  check(decoded: Decoded): Rejection | undefined {
    switch (decoded.kind) {
      case 'config':
        return this.checkConfig(decoded.value);
      case 'services':
        return firstOf(decoded.value.backends.map((b, i) => () => this.checkPodAddress(b.ip, `backends[${i}].ip`)));
      case 'ips': {
        const v = decoded.value;
        return this.checkPodAddress(v.ip, 'ip') ?? this.checkIdentity(v.identity, 'identity');
      }
      case 'identities':
        return this.checkIdentity(decoded.value.id, 'id');
      case 'nodes': {
        const v = decoded.value;
        return firstOf([
          ...v.addresses.map((a, i) => () => this.checkNodeAddress(a.ip, `addresses[${i}].ip`)),
          ...v.podCidrs.map((c, i) => () => this.checkPodCidr(c, `podCidrs[${i}]`)),
        ]);
      }
      default:
        return undefined; // heartbeat, synced: no addresses, no identities; bundle: checked by the judge (sync/peer-judge.ts)
    }
  }

  /** Advertised pod CIDRs the pin does not cover (informational: they widen nothing). */
  beyondPin(config: ClusterConfig): string[] {
    return config.podCidrs.filter((c) => {
      const s = Subnet.parse(c);
      return !s || !this.pinned.some((p) => p.covers(s));
    });
  }

  // The config's podCidrs are informational: a peer that later advertises wider ones gains nothing.
  private checkConfig(v: ClusterConfig): Rejection | undefined {
    if (v.id === this.peer.id) return undefined;
    return { reason: 'wrong-cluster-id', detail: `config names cluster ID ${v.id}; ${this.peer.name} was pinned at ID ${this.peer.id} by skein connect` };
  }

  private checkIdentity(id: number, field: string): Rejection | undefined {
    const cluster = clusterIdOf(id);
    if (cluster === this.peer.id) return undefined;
    return { reason: 'wrong-cluster-id', detail: `${field} ${id} carries cluster ID ${cluster} in bits 16-23; ${this.peer.name}'s identities carry ${this.peer.id}` };
  }

  private checkNodeAddress(ip: string, field: string): Rejection | undefined {
    const forbidden = forbiddenRangeOf(ip);
    return forbidden ? { reason: 'forbidden-address', detail: `${field} ${ip} is ${forbidden}: never a node address` } : undefined;
  }

  private checkPodAddress(ip: string, field: string): Rejection | undefined {
    const forbidden = forbiddenRangeOf(ip);
    if (forbidden) return { reason: 'forbidden-address', detail: `${field} ${ip} is ${forbidden}: never a backend` };
    const local = this.local.claimedBy(ip);
    if (local) return { reason: 'local-cidr', detail: `${field} ${ip} is inside ${local}` };
    if (this.pinned.some((p) => p.contains(ip))) return undefined;
    return { reason: 'outside-pinned-cidrs', detail: `${field} ${ip} is outside ${this.pinDescription}` };
  }

  private checkPodCidr(cidr: string, field: string): Rejection | undefined {
    const s = Subnet.parse(cidr)!; // the schema accepted it
    const forbidden = forbiddenRangeOf(s);
    if (forbidden) return { reason: 'forbidden-address', detail: `${field} ${cidr} overlaps ${forbidden}` };
    const local = this.local.claimedBy(s);
    if (local) return { reason: 'local-cidr', detail: `${field} ${cidr} overlaps ${local}` };
    if (this.pinned.some((p) => p.covers(s))) return undefined;
    return { reason: 'outside-pinned-cidrs', detail: `${field} ${cidr} is not inside ${this.pinDescription}` };
  }

  private get pinDescription(): string {
    const pin = this.pinned.map((p) => p.text).join(', ') || 'none';
    return `${this.peer.name}'s pinned pod CIDRs (${pin}); if ${this.peer.name}'s pod CIDRs grew, run skein connect again to re-pin`;
  }
}

function firstOf(checks: (() => Rejection | undefined)[]): Rejection | undefined {
  for (const c of checks) {
    const r = c();
    if (r) return r;
  }
  return undefined;
}
