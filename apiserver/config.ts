// The apiserver's configuration: flags (or SKEIN_* environment variables), validated at start-up with an
// error that names the flag and the fix.
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ClusterId, ClusterName } from '../mesh/schema/cluster.js';
import { parseCidr } from '../mesh/schema/values.js';
import { REMOTE_QUOTA } from '../mesh/address-policy.js';
import { WRITE_LIMITS } from '../mesh/state-writer.js';

const SECONDS_HINT = 'give whole seconds, for example 30';
const BYTES_HINT = 'give bytes as a whole number, optionally with Ki, Mi or Gi, for example 128Mi';

export const ApiserverConfig = z.object({
  clusterName: ClusterName,
  clusterId: ClusterId,
  kubeconfig: z.string().optional(),
  meshEtcd: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'each --mesh-etcd endpoint must be a URL such as https://127.0.0.1:2379')).min(1),
  meshEtcdCa: z.string().optional(),
  meshEtcdCert: z.string().optional(),
  meshEtcdKey: z.string().optional(),
  /** The endpoint peers use to reach this cluster's mesh etcd (default: the first --mesh-etcd). */
  meshAdvertise: z.string().regex(/^https?:\/\/[^/\s]+$/, '--mesh-advertise must be a URL such as https://203.0.113.7:2379').optional(),
  /**
   * A remote whose heartbeat has not advanced for this long is flagged stale (its state kept; its backends
   * leave the active sets while fresh ones can serve). Default 2 s; at least 1 s (two of its 500 ms beats).
   */
  remoteStaleAfterMs: z.number({ error: SECONDS_HINT }).int().min(1000, '--remote-stale-after must be at least 1 second'),
  /** A stale remote's cached state is removed after this long (0: kept until it returns or is disconnected). */
  remoteRemoveAfterMs: z.number({ error: SECONDS_HINT }).int().min(0),
  /** Lifetime of the read identities this cluster issues to its peers; renewed at half of it. */
  remoteIdentityTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--remote-identity-ttl must be at least 10 seconds'),
  /** Lifetime of this process's own mesh etcd identity; renewed at half of it. */
  meshIdentityTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--mesh-identity-ttl must be at least 10 seconds'),
  listen: z.string().regex(/^[^:]+:\d+$/, '--listen must be HOST:PORT, for example 0.0.0.0:9876'),
  /** The node CA (gRPC, mTLS) agents ask for workload SVIDs. */
  nodeCaListen: z.string().regex(/^[^:]+:\d+$/, '--node-ca-listen must be HOST:PORT, for example 0.0.0.0:9443'),
  /** The address agents reach this pod at (the pod IP, from the downward API). */
  advertiseIp: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, '--advertise-ip must be this pod\'s IPv4 address (set POD_IP from status.podIP)').optional(),
  /** This cluster's Service CIDR (kube-apiserver's --service-cluster-ip-range): no peer may claim addresses in it. */
  serviceCidr: z
    .string()
    .refine((s) => parseCidr(s) !== undefined, "--service-cidr must be this cluster's Service CIDR as kube-apiserver's --service-cluster-ip-range has it, for example 10.96.0.0/12")
    .optional(),
  /**
   * The cluster's whole pod CIDR(s) (kube-controller-manager's --cluster-cidr): what `skein connect` pins at
   * peers, so pods of nodes added later are accepted. Default: the pod CIDRs of the nodes there are.
   */
  clusterPodCidrs: z
    .array(z.string().refine((s) => parseCidr(s) !== undefined, "--cluster-pod-cidr must be the cluster's pod CIDR as kube-controller-manager's --cluster-cidr has it, for example 10.244.0.0/16 (comma-separated for several)"))
    .optional(),
  /**
   * Certify node agents that ask through Kubernetes CertificateSigningRequests of signer skein.io/node
   * (apiserver/node-csr.ts; the Helm chart's agents do). Off where node identities are issued otherwise.
   */
  signNodeRequests: z.boolean(),
  /** Lifetime of workload X.509-SVIDs (agents renew them at half-life) and of JWT-SVIDs. */
  svidTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--svid-ttl must be at least 10 seconds'),
  jwtSvidTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--jwt-svid-ttl must be at least 10 seconds'),
  /** Lifetime of the serving certificates this process issues (the node CA's, the mesh etcd's); renewed at half of it. */
  servingCertTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--serving-cert-ttl must be at least 10 seconds'),
  /** Lifetime of the node identities this process issues (a chart agent's first, every renewal); agents renew at half of it. */
  nodeIdentityTtlMs: z.number({ error: SECONDS_HINT }).int().min(10_000, '--node-identity-ttl must be at least 10 seconds'),
  /**
   * Where the mesh etcd reads its serving certificate (server.crt, server.key): a volume shared with it (a
   * sidecar etcd's emptyDir). Set, this process keeps a certificate there renewed at half-life; unset, the
   * installer owns that certificate.
   */
  meshEtcdServingDir: z.string().startsWith('/', '--mesh-etcd-serving-dir must be an absolute path').optional(),
  /** A security identity no pod has used for this long is released and its ID handed out again. */
  identityGcGraceMs: z
    .number({ error: SECONDS_HINT })
    .int()
    .min(1_000, '--identity-gc-grace must be at least 1 second')
    .max(7 * 86_400_000, '--identity-gc-grace must be at most 604800 seconds (7 days): unused identities hold IDs of a finite space'),
  /** The mesh etcd is compacted every interval to the revision seen one interval earlier (0: never, leave it to etcd's --auto-compaction). */
  meshCompactionIntervalMs: z
    .number({ error: SECONDS_HINT })
    .int()
    .refine((ms) => ms === 0 || ms >= 10_000, '--mesh-compaction-interval must be 0 (off) or at least 10 seconds: watchers more than one interval behind must relist'),
  /** The mesh etcd is defragmented when more than half its file and more than this many bytes are free. */
  meshDefragMinFreeBytes: z.number({ error: BYTES_HINT }).int().min(0),
  /** Per peer: cached keys beyond this are refused (`over-quota`) and the peer is flagged. */
  remoteMaxKeys: z.number({ error: 'give a whole number of keys, for example 200000' }).int().min(1, '--remote-max-keys must be at least 1'),
  /** Per peer: the bytes (key + value) its cached keys may take in the local mesh etcd. */
  remoteMaxBytes: z.number({ error: BYTES_HINT }).int().min(1024 * 1024, '--remote-max-bytes must be at least 1Mi'),
  /** Per key: a larger value from a peer is refused (`too-large`). */
  remoteMaxValueBytes: z
    .number({ error: BYTES_HINT })
    .int()
    .min(1024, '--remote-max-value-bytes must be at least 1Ki')
    .max(WRITE_LIMITS.maxBatchBytes - 1, `--remote-max-value-bytes must be below ${WRITE_LIMITS.maxBatchBytes / 1024 / 1024}Mi: a value must fit one write batch of the local mesh etcd`),
});
export type ApiserverConfig = z.infer<typeof ApiserverConfig>;

/** Whole seconds, or NaN (which the schema then refuses, naming the flag). */
const seconds = (v: string) => (/^\d+$/.test(v) ? Number(v) : NaN);
const UNIT = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 } as const;
/** Bytes with an optional binary unit (128Mi), or NaN. */
const bytes = (v: string) => {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(v);
  return m ? Number(m[1]) * UNIT[(m[2] ?? '') as keyof typeof UNIT] : NaN;
};

const FLAG_OF: Record<string, string> = {
  remoteStaleAfterMs: '--remote-stale-after',
  remoteRemoveAfterMs: '--remote-remove-after',
  remoteIdentityTtlMs: '--remote-identity-ttl',
  meshIdentityTtlMs: '--mesh-identity-ttl',
  clusterName: '--cluster-name',
  clusterId: '--cluster-id',
  meshEtcd: '--mesh-etcd',
  listen: '--listen',
  nodeCaListen: '--node-ca-listen',
  advertiseIp: '--advertise-ip',
  serviceCidr: '--service-cidr',
  clusterPodCidrs: '--cluster-pod-cidr',
  svidTtlMs: '--svid-ttl',
  jwtSvidTtlMs: '--jwt-svid-ttl',
  servingCertTtlMs: '--serving-cert-ttl',
  nodeIdentityTtlMs: '--node-identity-ttl',
  meshEtcdServingDir: '--mesh-etcd-serving-dir',
  identityGcGraceMs: '--identity-gc-grace',
  meshCompactionIntervalMs: '--mesh-compaction-interval',
  meshDefragMinFreeBytes: '--mesh-defrag-min-free',
  remoteMaxKeys: '--remote-max-keys',
  remoteMaxBytes: '--remote-max-bytes',
  remoteMaxValueBytes: '--remote-max-value-bytes',
};

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): ApiserverConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      'cluster-name': { type: 'string' },
      'cluster-id': { type: 'string' },
      kubeconfig: { type: 'string' },
      'mesh-etcd': { type: 'string' },
      'mesh-etcd-ca': { type: 'string' },
      'mesh-etcd-cert': { type: 'string' },
      'mesh-etcd-key': { type: 'string' },
      'mesh-advertise': { type: 'string' },
      'remote-stale-after': { type: 'string' },
      'remote-remove-after': { type: 'string' },
      'remote-identity-ttl': { type: 'string' },
      'mesh-identity-ttl': { type: 'string' },
      listen: { type: 'string' },
      'node-ca-listen': { type: 'string' },
      'advertise-ip': { type: 'string' },
      'service-cidr': { type: 'string' },
      'cluster-pod-cidr': { type: 'string' },
      'sign-node-requests': { type: 'boolean' },
      'svid-ttl': { type: 'string' },
      'jwt-svid-ttl': { type: 'string' },
      'serving-cert-ttl': { type: 'string' },
      'node-identity-ttl': { type: 'string' },
      'mesh-etcd-serving-dir': { type: 'string' },
      'identity-gc-grace': { type: 'string' },
      'mesh-compaction-interval': { type: 'string' },
      'mesh-defrag-min-free': { type: 'string' },
      'remote-max-keys': { type: 'string' },
      'remote-max-bytes': { type: 'string' },
      'remote-max-value-bytes': { type: 'string' },
    },
  });
  const idText = values['cluster-id'] ?? env.SKEIN_CLUSTER_ID;
  // 2 s: four of a peer's 500 ms heartbeats missed (apiserver/export/presence.ts), judged on this clock.
  const staleText = values['remote-stale-after'] ?? env.SKEIN_REMOTE_STALE_AFTER ?? '2';
  const removeText = values['remote-remove-after'] ?? env.SKEIN_REMOTE_REMOVE_AFTER ?? '0';
  const ttlText = values['remote-identity-ttl'] ?? env.SKEIN_REMOTE_IDENTITY_TTL ?? '86400';
  const meshTtlText = values['mesh-identity-ttl'] ?? env.SKEIN_MESH_IDENTITY_TTL ?? '3600';
  const svidTtlText = values['svid-ttl'] ?? env.SKEIN_SVID_TTL ?? '3600';
  const jwtTtlText = values['jwt-svid-ttl'] ?? env.SKEIN_JWT_SVID_TTL ?? '300';
  const servingTtlText = values['serving-cert-ttl'] ?? env.SKEIN_SERVING_CERT_TTL ?? '86400';
  const nodeIdentityTtlText = values['node-identity-ttl'] ?? env.SKEIN_NODE_IDENTITY_TTL ?? String(365 * 86400);
  const identityGcText = values['identity-gc-grace'] ?? env.SKEIN_IDENTITY_GC_GRACE ?? '600';
  const compactionText = values['mesh-compaction-interval'] ?? env.SKEIN_MESH_COMPACTION_INTERVAL ?? '300';
  const defragFreeText = values['mesh-defrag-min-free'] ?? env.SKEIN_MESH_DEFRAG_MIN_FREE ?? '32Mi';
  const maxKeysText = values['remote-max-keys'] ?? env.SKEIN_REMOTE_MAX_KEYS ?? String(REMOTE_QUOTA.maxKeys);
  const maxBytesText = values['remote-max-bytes'] ?? env.SKEIN_REMOTE_MAX_BYTES ?? String(REMOTE_QUOTA.maxBytes);
  const maxValueText = values['remote-max-value-bytes'] ?? env.SKEIN_REMOTE_MAX_VALUE_BYTES ?? String(REMOTE_QUOTA.maxValueBytes);
  // What the user typed, for error messages about fields parsed into numbers.
  const typed: Record<string, string | undefined> = { clusterId: idText, remoteStaleAfterMs: staleText, remoteRemoveAfterMs: removeText, remoteIdentityTtlMs: ttlText, meshIdentityTtlMs: meshTtlText, svidTtlMs: svidTtlText, jwtSvidTtlMs: jwtTtlText, servingCertTtlMs: servingTtlText, nodeIdentityTtlMs: nodeIdentityTtlText, identityGcGraceMs: identityGcText, meshCompactionIntervalMs: compactionText, meshDefragMinFreeBytes: defragFreeText, remoteMaxKeys: maxKeysText, remoteMaxBytes: maxBytesText, remoteMaxValueBytes: maxValueText };
  const raw = {
    clusterName: values['cluster-name'] ?? env.SKEIN_CLUSTER_NAME,
    clusterId: idText === undefined ? undefined : /^\d+$/.test(idText) ? Number(idText) : NaN,
    kubeconfig: values.kubeconfig ?? env.KUBECONFIG,
    meshEtcd: (values['mesh-etcd'] ?? env.SKEIN_MESH_ETCD ?? '').split(',').filter(Boolean),
    meshEtcdCa: values['mesh-etcd-ca'] ?? env.SKEIN_MESH_ETCD_CA,
    meshEtcdCert: values['mesh-etcd-cert'] ?? env.SKEIN_MESH_ETCD_CERT,
    meshEtcdKey: values['mesh-etcd-key'] ?? env.SKEIN_MESH_ETCD_KEY,
    meshAdvertise: values['mesh-advertise'] ?? env.SKEIN_MESH_ADVERTISE,
    remoteStaleAfterMs: seconds(staleText) * 1000,
    remoteRemoveAfterMs: seconds(removeText) * 1000,
    remoteIdentityTtlMs: seconds(ttlText) * 1000,
    meshIdentityTtlMs: seconds(meshTtlText) * 1000,
    listen: values.listen ?? env.SKEIN_LISTEN ?? '0.0.0.0:9876',
    nodeCaListen: values['node-ca-listen'] ?? env.SKEIN_NODE_CA_LISTEN ?? '0.0.0.0:9443',
    advertiseIp: values['advertise-ip'] ?? env.POD_IP,
    serviceCidr: values['service-cidr'] ?? env.SKEIN_SERVICE_CIDR,
    signNodeRequests: values['sign-node-requests'] ?? env.SKEIN_SIGN_NODE_REQUESTS === 'true',
    clusterPodCidrs: (values['cluster-pod-cidr'] ?? env.SKEIN_CLUSTER_POD_CIDR)?.split(',').filter(Boolean),
    svidTtlMs: seconds(svidTtlText) * 1000,
    jwtSvidTtlMs: seconds(jwtTtlText) * 1000,
    servingCertTtlMs: seconds(servingTtlText) * 1000,
    nodeIdentityTtlMs: seconds(nodeIdentityTtlText) * 1000,
    meshEtcdServingDir: values['mesh-etcd-serving-dir'] ?? env.SKEIN_MESH_ETCD_SERVING_DIR,
    identityGcGraceMs: seconds(identityGcText) * 1000,
    meshCompactionIntervalMs: seconds(compactionText) * 1000,
    meshDefragMinFreeBytes: bytes(defragFreeText),
    remoteMaxKeys: seconds(maxKeysText), // a whole number: the same digits-only parse
    remoteMaxBytes: bytes(maxBytesText),
    remoteMaxValueBytes: bytes(maxValueText),
  };
  const parsed = ApiserverConfig.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = String(issue.path[0] ?? '');
    const flag = FLAG_OF[field] ?? `--${field}`;
    const got = field in typed ? typed[field] : (raw as Record<string, unknown>)[field];
    const missing = got === undefined || (Array.isArray(got) && got.length === 0);
    if (missing) throw new Error(`${flag} is required (or set SKEIN_${field.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()})`);
    const shown = Array.isArray(got) ? got.join(',') : typeof got === 'string' || typeof got === 'number' ? String(got) : JSON.stringify(got);
    throw new Error(`${flag} "${shown}": ${issue.message}`);
  }
  return parsed.data;
}
