// Every value Skein writes to a mesh etcd, as zod schemas: validated when written and when read, so a bad
// writer (a bug, an old version, a hostile remote) cannot get a malformed value into anyone's datapath.
import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { firstIssue } from './issue.js';
import type { ParsedKey } from './keys.js';
import { ClusterId, ClusterName } from './cluster.js';

/**
 * A CIDR in strict form: a dotted-quad IPv4 address (node:net's parser: octets 0-255, no leading zeros, no
 * spaces) and a prefix length 0-32 without leading zeros. Host bits may be set (Kubernetes accepts them in
 * a node's podCIDR); whoever tests membership masks them. Undefined if the text is not one.
 */
export function parseCidr(text: string): { address: string; prefix: number } | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const address = text.slice(0, slash);
  const bits = text.slice(slash + 1);
  if (!isIPv4(address) || !/^(0|[1-9]\d?)$/.test(bits) || Number(bits) > 32) return undefined;
  return { address, prefix: Number(bits) };
}

export const Ipv4 = z.string().refine((s) => isIPv4(s), 'expected an IPv4 address such as 10.1.2.3 (four decimal octets 0-255, no leading zeros or spaces)');
export const Cidr = z.string().refine((s) => parseCidr(s) !== undefined, 'expected an IPv4 CIDR such as 10.1.0.0/16 (an IPv4 address, "/", a prefix length 0-32)');
const Port = z.number().int().min(1).max(65535);
const Protocol = z.enum(['TCP', 'UDP', 'SCTP']);

export const Affinity = z.enum(['local', 'remote', 'none']);
export type Affinity = z.infer<typeof Affinity>;

export const ClusterConfig = z.object({
  name: ClusterName,
  id: ClusterId,
  podCidrs: z.array(Cidr),
  schema: z.literal('v1'),
});
export type ClusterConfig = z.infer<typeof ClusterConfig>;

export const ServicePort = z.object({ name: z.string(), port: Port, protocol: Protocol });
export type ServicePort = z.infer<typeof ServicePort>;

export const Backend = z.object({
  ip: Ipv4,
  /** Backend port per service port name. */
  ports: z.record(z.string(), z.object({ port: Port, protocol: Protocol })),
  ready: z.boolean(),
  serving: z.boolean(),
  terminating: z.boolean(),
  node: z.string().optional(),
  zone: z.string().optional(),
});
export type Backend = z.infer<typeof Backend>;

/**
 * `skein.io/local-min-ready` (annotations.ts): with affinity `local`, below this many ready local backends
 * local and remote backends are used together, the local share growing with them (datapath/agent/policy.ts).
 * `count`: ready local backends; `percent`: of the service's local endpoints that are not terminating.
 */
export const LocalMinReady = z.union([z.object({ count: z.number().int().min(1).max(65535) }), z.object({ percent: z.number().int().min(1).max(100) })]);
export type LocalMinReady = z.infer<typeof LocalMinReady>;

export const GlobalService = z.object({
  cluster: ClusterName,
  namespace: z.string().min(1),
  name: z.string().min(1),
  shared: z.boolean(),
  affinity: Affinity,
  /** Optional: absent (no spillover, as before) in values of older versions and of services without it. */
  localMinReady: LocalMinReady.optional(),
  clusterIps: z.array(Ipv4),
  ports: z.array(ServicePort),
  backends: z.array(Backend),
});
export type GlobalService = z.infer<typeof GlobalService>;

export const IdentityValue = z.object({
  id: z.number().int().min(1).max(0xffffff),
  labels: z.record(z.string(), z.string()),
});
export type IdentityValue = z.infer<typeof IdentityValue>;

export const IpEntry = z.object({
  ip: Ipv4,
  identity: z.number().int().min(1).max(0xffffff),
  namespace: z.string(),
  pod: z.string(),
  node: z.string().optional(),
});
export type IpEntry = z.infer<typeof IpEntry>;

export const MeshNode = z.object({
  name: z.string().min(1),
  cluster: ClusterName,
  addresses: z.array(z.object({ type: z.string(), ip: Ipv4 })),
  podCidrs: z.array(Cidr),
  zone: z.string().optional(),
});
export type MeshNode = z.infer<typeof MeshNode>;

export const Heartbeat = z.object({ cluster: ClusterName, at: z.string().datetime(), revisionHint: z.string().optional() });
export const SyncedMarker = z.object({ at: z.string().datetime(), count: z.number().int().min(0) });

/**
 * What one node agent has programmed (local prefix, on the agent's lease): `skein status` shows it. The
 * agent publishes this header with `programmed` empty and `shards` set, and its frontends in `shards` values
 * of AgentFrontendShard (keys.agentFrontends, mesh/agent-view.ts); readers assemble them. An agent without
 * `shards` (older) has its first AGENT_VIEW_MAX frontends inline.
 */
export const AgentView = z.object({
  node: z.string(),
  at: z.string().datetime(),
  frontends: z.number().int().min(0),
  backends: z.number().int().min(0),
  reconciles: z.number().int().min(0),
  lastReconcileMs: z.number().min(0),
  /** Frontend (PROTO/ip:port) → its active backends (ip:port); assembled from the shards when read (see above). */
  programmed: z.record(z.string(), z.array(z.string())),
  /** Some programmed frontends are not in `programmed` (a reader's cap, or a shard over its size budget). */
  truncated: z.boolean(),
  /** How many shard keys hold the programmed frontends (mesh/agent-view.ts); absent: inline (older agents). */
  shards: z.number().int().min(1).max(1024).optional(),
  /**
   * Frontend → why the datapath refused it (the first AGENT_VIEW_MAX; `failures` counts all). Such a frontend
   * keeps what it had before and is retried on its own. Optional: older agents do not publish it.
   */
  failing: z
    .record(
      z.string(),
      z.object({
        /** namespace/name; '' for a leftover frontend whose removal failed. */
        service: z.string(),
        /** too-many-backends, map-full, bad-address, kernel, error: open-ended so a newer agent's reason still parses. */
        reason: z.string(),
        error: z.string(),
        since: z.string().datetime(),
        attempts: z.number().int().min(1),
      }),
    )
    .optional(),
  failures: z.number().int().min(0).optional(),
  /**
   * Backends (PROTO/ip:port) outlier detection took out of active sets because this node's sockets saw them
   * fail, until `until` (the first AGENT_VIEW_MAX; `ejectedCount` counts all). Optional: older agents.
   */
  ejected: z
    .array(
      z.object({
        backend: z.string(),
        /** The first service (namespace/name) it is a backend of. */
        service: z.string().optional(),
        since: z.string().datetime(),
        until: z.string().datetime(),
        /** Consecutive failures that ejected it. */
        failures: z.number().int().min(0),
        /** Times ejected lately (the multiplier of its ejection time). */
        ejections: z.number().int().min(1),
      }),
    )
    .optional(),
  ejectedCount: z.number().int().min(0).optional(),
  /**
   * What the node's Workload API serves (agents with one): per trust domain the serials of its bundle's CAs,
   * and how many SVIDs held here each CA of the own bundle signed (`unknown`: none of them). `skein ca rotate`
   * waits on it. Optional: older agents and agents without a Workload API.
   */
  workload: z.object({ bundles: z.record(z.string(), z.array(z.string())), svidSigners: z.record(z.string(), z.number().int().min(0)) }).optional(),
});
export type AgentView = z.infer<typeof AgentView>;
/** Frontends, failures and ejections listed per node where all of them would be too many (/v1/status, the header). */
export const AGENT_VIEW_MAX = 500;

/**
 * One shard of a node agent's programmed frontends (keys.agentFrontends, on the agent's lease): the frontends
 * whose stable hash falls in it (mesh/agent-view.ts agentShardOf), so a change rewrites one small value.
 */
export const AgentFrontendShard = z.object({
  node: z.string(),
  shard: z.number().int().min(0),
  /** Frontend (PROTO/ip:port) → its active backends (ip:port). */
  programmed: z.record(z.string(), z.array(z.string())),
  /** Frontends left out to keep the value within its size budget (never in practice: see AGENT_SHARD_MAX_BYTES). */
  omitted: z.number().int().min(0),
});
export type AgentFrontendShard = z.infer<typeof AgentFrontendShard>;

const TrustDomain = z.string().regex(/^[a-z0-9._-]+$/, 'a trust domain is lower-case letters, digits, ".", "_" and "-"');
/** One or more CA certificates, PEM, concatenated (two while a CA rotates; mtls/trust-bundle.ts checks them). */
const BundlePem = z.string().includes('BEGIN CERTIFICATE', { message: 'caPem must hold the trust domain\'s CA certificates (PEM)' }).max(64 * 1024);

/** A trust domain's bundle as agents serve it: its CA certificates. JWT bundles are derived from them. */
export const TrustBundle = z.object({
  trustDomain: TrustDomain,
  caPem: BundlePem,
  /** The cluster whose CA this is: only that link may replace or remove it. */
  cluster: ClusterName,
  /** This cluster's own trust domain (the others are federated). */
  own: z.boolean(),
});
export type TrustBundle = z.infer<typeof TrustBundle>;

/**
 * A cluster's own trust bundle as it exports it (keys.exportedBundle): how a CA rotation reaches its peers.
 * A peer's sync accepts it only for that cluster's own trust domain, and only if every CA in it passes.
 */
export const ExportedBundle = z.object({ cluster: ClusterName, trustDomain: TrustDomain, caPem: BundlePem });
export type ExportedBundle = z.infer<typeof ExportedBundle>;

/** A remote's sync health, as agents act on it (keys.syncStatus). */
export const SyncStatus = z.object({ cluster: ClusterName, connected: z.boolean(), synced: z.boolean(), stale: z.boolean() });
export type SyncStatus = z.infer<typeof SyncStatus>;

export const NodeCaEndpoint = z.object({
  endpoint: z.string().regex(/^[^:/\s]+:\d+$/),
  /** Serial of the workload CA that signs now: when it changes (a rotation's activate), agents re-issue every SVID they hold. */
  signer: z.string().regex(/^[0-9A-F]+$/).optional(),
});
export type NodeCaEndpoint = z.infer<typeof NodeCaEndpoint>;

export type Heartbeat = z.infer<typeof Heartbeat>;
export type SyncedMarker = z.infer<typeof SyncedMarker>;

/** A decoded export value, tagged with its key's kind: callers narrow on `kind`, never cast. */
export type Decoded =
  | { kind: 'config'; value: ClusterConfig }
  | { kind: 'heartbeat'; value: Heartbeat }
  | { kind: 'bundle'; value: ExportedBundle }
  | { kind: 'synced'; value: SyncedMarker }
  | { kind: 'services'; value: GlobalService }
  | { kind: 'identities'; value: IdentityValue }
  | { kind: 'ips'; value: IpEntry }
  | { kind: 'nodes'; value: MeshNode };
export type DecodeResult = ({ ok: true } & Decoded) | { ok: false; error: string };

function fit<T>(schema: z.ZodType<T>, json: unknown): { ok: true; value: T } | { ok: false; error: string } {
  const parsed = schema.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: firstIssue(parsed.error) };
}

/**
 * Decodes and checks a value against its key: the schema of its kind, and consistency with the key itself
 * (a service's cluster/namespace/name, an identity's id, an IP entry's ip, a node's name).
 */
export function decodeValue(key: ParsedKey, raw: string): DecodeResult {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false, error: 'value is not JSON' };
  }
  const mismatch = { ok: false as const, error: `value does not match its key (${key.kind} of cluster ${key.cluster})` };
  switch (key.kind) {
    case 'config': {
      const r = fit(ClusterConfig, json);
      if (!r.ok) return r;
      return r.value.name === key.cluster ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
    case 'heartbeat': {
      const r = fit(Heartbeat, json);
      if (!r.ok) return r;
      return r.value.cluster === key.cluster ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
    case 'bundle': {
      const r = fit(ExportedBundle, json);
      if (!r.ok) return r;
      return r.value.cluster === key.cluster ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
    case 'synced': {
      const r = fit(SyncedMarker, json);
      return r.ok ? { ok: true, kind: key.kind, value: r.value } : r;
    }
    case 'services': {
      const r = fit(GlobalService, json);
      if (!r.ok) return r;
      const v = r.value;
      return v.cluster === key.cluster && v.namespace === key.namespace && v.name === key.name ? { ok: true, kind: key.kind, value: v } : mismatch;
    }
    case 'identities': {
      const r = fit(IdentityValue, json);
      if (!r.ok) return r;
      return String(r.value.id) === key.id ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
    case 'ips': {
      const r = fit(IpEntry, json);
      if (!r.ok) return r;
      return r.value.ip === key.id ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
    case 'nodes': {
      const r = fit(MeshNode, json);
      if (!r.ok) return r;
      return r.value.name === key.id && r.value.cluster === key.cluster ? { ok: true, kind: key.kind, value: r.value } : mismatch;
    }
  }
}

/** JSON text checked against a schema: the value, or undefined when it is not JSON or does not fit. */
export function decodeJson<T>(schema: z.ZodType<T>, raw: string): T | undefined {
  try {
    const r = schema.safeParse(JSON.parse(raw));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** Serializes after validating: a value that would fail on read is never written. */
export function encodeValue<T>(schema: z.ZodType<T>, value: T): string {
  return JSON.stringify(schema.parse(value));
}
