// skein-apiserver: one per cluster. Exports the cluster's global services, identities and nodes into its
// mesh etcd, replicates connected remote clusters' exports into the local cache, and serves health,
// readiness, metrics and status over HTTP.
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { ensureClusterCA, type ClusterCA } from '../mtls/cluster-ca.js';
import { CredentialIssuer } from '../sync/credential-issuer.js';
import { SyncManager } from '../sync/manager.js';
import { parseConfig, type ApiserverConfig } from './config.js';
import { Exporter } from './export/exporter.js';
import { StateWriter } from '../mesh/state-writer.js';
import { buildHttp } from './http.js';
import { Catalog } from './dashboard/catalog.js';
import { DrillHistoryReader } from './dashboard/drills.js';
import { KubeRest } from '../mesh/kube/rest.js';
import { KubeSecrets } from '../mesh/kube/secrets.js';
import { ensureMeshAuth, syncPeerUsers } from './mesh-auth.js';
import { connectMeshEtcd, EtcdKv, type EtcdRef } from '../mesh/etcd.js';
import { meshEtcdServerName } from '../mtls/mesh-identities.js';
import { EtcdReleasableIdentityStore } from './export/identity-etcd.js';
import { MeshIdentity } from './mesh-identity.js';
import { createMetrics } from './metrics.js';
import { etcdMaintenanceTarget, MeshMaintenance } from './mesh-maintenance.js';
import { retryUntilDone } from '../mesh/backoff.js';
import { agentView, agentViews, type ExportStatus } from '../mesh/status.js';
import { NodeCaServer } from './node-ca/server.js';
import { keepMeshEtcdServing } from './mesh-etcd-serving.js';
import type { RenewingCertificate } from '../mtls/renewing-cert.js';
import { NodeUsers } from './node-users.js';
import { NodeCsrSigner } from './node-csr.js';
import { serialOf, WorkloadCaFollower } from './workload-ca.js';
import { keys } from '../mesh/schema/keys.js';
import { encodeValue, NodeCaEndpoint } from '../mesh/schema/values.js';
import type { Logger } from 'pino';

/**
 * Workload identity: this cluster's trust bundle for its agents and peers, kept in step with the workload
 * CA Secret while it rotates (workload-ca.ts), and the node CA agents ask for SVIDs, where they find it (its
 * endpoint in the mesh etcd, with the serial of the CA that signs). Without an advertised pod IP agents could
 * not reach it.
 */
async function startWorkloadIdentity(cfg: ApiserverConfig, ca: ClusterCA, kc: KubeConfig, rest: KubeRest, etcd: EtcdRef, log: Logger): Promise<{ nodeCa?: NodeCaServer; workloadCa: WorkloadCaFollower }> {
  // Filled in once the node CA serves: the follower may call back before (nothing to tell then).
  const node: { ca?: NodeCaServer; endpoint?: string } = {};
  const putEndpoint = async (signer: string) => {
    if (node.endpoint) await etcd().put(keys.nodeCa(cfg.clusterName)).value(encodeValue(NodeCaEndpoint, { endpoint: node.endpoint, signer }));
  };
  const workloadCa = new WorkloadCaFollower({ kc, rest, etcd, ca, log, onSigning: (s) => node.ca?.setWorkloadCa(s.signing, s.bundlePem), announceSigner: putEndpoint });
  await workloadCa.start();
  if (!cfg.advertiseIp) {
    log.warn('no --advertise-ip (POD_IP): the node CA is off, so agents cannot issue workload SVIDs');
    return { workloadCa };
  }
  const now = workloadCa.current;
  const nodeCa = new NodeCaServer({ ca: { ...ca, workload: now.signing, workloadBundle: now.bundlePem }, rest, svidTtlMs: cfg.svidTtlMs, jwtTtlMs: cfg.jwtSvidTtlMs, servingTtlMs: cfg.servingCertTtlMs, nodeIdentityTtlMs: cfg.nodeIdentityTtlMs, log });
  node.ca = nodeCa;
  const [host, port] = cfg.nodeCaListen.split(':') as [string, string];
  const bound = await nodeCa.listen(host, Number(port), [cfg.advertiseIp]);
  node.endpoint = `${cfg.advertiseIp}:${bound}`;
  // The CA may have changed while the server started: sign and announce what the Secret says now.
  nodeCa.setWorkloadCa(workloadCa.current.signing, workloadCa.current.bundlePem);
  await retryUntilDone('publishing the node CA endpoint', () => putEndpoint(serialOf(workloadCa.current.signing.certPem)), log);
  log.info({ endpoint: node.endpoint }, 'node CA serving');
  return { nodeCa, workloadCa };
}

/** The export's status with the writes its writer refused (the first 20 keys of them). */
function withRefusedWrites(s: ExportStatus, writer: StateWriter): ExportStatus {
  return { ...s, etcd: { ...s.etcd, refused: writer.refused, refusedWrites: writer.refusedWrites().slice(0, 20) } };
}

function configOrExit(): ApiserverConfig {
  try {
    return parseConfig(process.argv.slice(2));
  } catch (err) {
    console.error(`skein-apiserver: ${(err as Error).message}`);
    process.exit(2);
  }
}

async function main(): Promise<void> {
  const cfg = configOrExit();
  const log = pino({ base: { cluster: cfg.clusterName } });
  const kc = new KubeConfig();
  if (cfg.kubeconfig) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  const rest = new KubeRest(kc);
  const metrics = createMetrics();

  // With an https mesh etcd and no certificate given, this process is the cluster's etcd root: it issues
  // itself that identity from the cluster CA (created on first start), renews it at half-life, and sets
  // up etcd's own RBAC.
  let ca: ClusterCA | undefined;
  let identity: MeshIdentity | undefined;
  let etcdRef: EtcdRef;
  if (cfg.meshEtcd[0]!.startsWith('https:') && !cfg.meshEtcdCert) {
    const clusterCa = await retryUntilDone('loading the cluster CA', () => ensureClusterCA(new KubeSecrets(rest), cfg.clusterName), log);
    ca = clusterCa;
    identity = await MeshIdentity.create({ endpoints: cfg.meshEtcd, ca: clusterCa, cluster: cfg.clusterName, ttlMs: cfg.meshIdentityTtlMs, log });
    etcdRef = identity.ref;
  } else {
    const fixed = connectMeshEtcd({ endpoints: cfg.meshEtcd, caFile: cfg.meshEtcdCa, certFile: cfg.meshEtcdCert, keyFile: cfg.meshEtcdKey, serverName: meshEtcdServerName(cfg.clusterName) });
    etcdRef = () => fixed;
  }

  // eslint-disable-next-line prefer-const -- the writer's onError closure reads it before it is assigned below (a const would throw there)
  let exporter!: Exporter;
  const writer = new StateWriter(new EtcdKv(etcdRef), {
    onBatch: (_ops, seconds) => metrics.etcdWrite.observe(seconds),
    onError: (err, attempt) => {
      metrics.etcdErrors.inc();
      exporter?.noteEtcdError(err);
      if (attempt === 1 || attempt % 20 === 0) log.warn({ err: (err as Error).message, attempt }, 'mesh etcd write failed, retrying');
    },
    onRefused: (key, bytes, limit, why) => {
      metrics.etcdRefusedWrites.inc();
      log.warn({ key, bytes, limit, why }, 'refused an export write that can never fit an etcd request: etcd keeps its previous value');
    },
  });
  exporter = new Exporter({ cluster: cfg.clusterName, clusterId: cfg.clusterId, clusterPodCidrs: cfg.clusterPodCidrs, kc, rest, etcd: etcdRef, writer, identities: new EtcdReleasableIdentityStore(etcdRef, cfg.clusterName, cfg.clusterId), identityGcGraceMs: cfg.identityGcGraceMs, metrics, log });
  identity?.onRenewed(() => exporter.moveLease());
  const issuer = ca && new CredentialIssuer({ etcd: etcdRef, ca, cluster: cfg.clusterName, ttlMs: cfg.remoteIdentityTtlMs, log });
  const sync = new SyncManager({
    kc, rest, secrets: new KubeSecrets(rest), local: etcdRef, localCluster: cfg.clusterName, log, issuer, ownTrustDomain: ca?.trustDomain,
    authorizePeers: (peers) => syncPeerUsers(etcdRef(), cfg.clusterName, peers),
    staleAfterMs: cfg.remoteStaleAfterMs, removeAfterMs: cfg.remoteRemoveAfterMs,
    serviceCidr: cfg.serviceCidr,
    onRemoteRejected: (remote, reason) => metrics.remoteRejectedKeys.inc({ remote, reason }),
    remoteQuota: { maxKeys: cfg.remoteMaxKeys, maxBytes: cfg.remoteMaxBytes, maxValueBytes: cfg.remoteMaxValueBytes },
  });
  metrics.followRemotes(() => sync.status());
  identity?.onRenewed(() => sync.moveLease());
  // Compaction and defragmentation here, not in etcd's flags: it works however the mesh etcd is launched.
  const maintenance =
    cfg.meshCompactionIntervalMs > 0
      ? new MeshMaintenance({
          target: etcdMaintenanceTarget(etcdRef),
          cluster: cfg.clusterName,
          intervalMs: cfg.meshCompactionIntervalMs,
          defragMinFreeBytes: cfg.meshDefragMinFreeBytes,
          defrag: cfg.meshEtcd.length === 1,
          metrics,
          log,
        })
      : undefined;
  if (maintenance && cfg.meshEtcd.length > 1) log.warn({ endpoints: cfg.meshEtcd }, 'several mesh etcd endpoints: compacting, but not defragmenting (each member must be defragmented on its own)');
  if (!cfg.serviceCidr) log.warn('no --service-cidr: remote backends inside this cluster\'s Service CIDR cannot be refused (set it to kube-apiserver\'s --service-cluster-ip-range)');
  const meshEndpoint = cfg.meshAdvertise ?? cfg.meshEtcd[0]!;
  // Filled in as they start; /status shows each serving certificate and its renewals, and the workload CA's phase.
  const serving: { nodeCa?: NodeCaServer; meshEtcd?: RenewingCertificate; workloadCa?: WorkloadCaFollower } = {};
  if (ca && cfg.meshEtcdServingDir) {
    serving.meshEtcd = await keepMeshEtcdServing({ dir: cfg.meshEtcdServingDir, ca, endpoints: [...cfg.meshEtcd, meshEndpoint], ttlMs: cfg.servingCertTtlMs, log });
  }
  const statusCore = () => ({
    ...withRefusedWrites(exporter.status(), writer),
    meshEndpoint,
    trustDomain: ca?.trustDomain,
    workloadCa: serving.workloadCa && { ...serving.workloadCa.view(), jwtSvidTtlMs: cfg.jwtSvidTtlMs },
    meshIdentity: identity && { expires: identity.expires, rotations: identity.rotations },
    servingCertificates: {
      nodeCa: serving.nodeCa?.servingCertificate(),
      meshEtcd: serving.meshEtcd && { serial: serving.meshEtcd.current.serial, notAfter: new Date(serving.meshEtcd.current.notAfterMs).toISOString(), renewals: serving.meshEtcd.renewals },
    },
    remotes: sync.status(),
    refusedLinks: sync.refusedLinks(),
  });
  const catalog = new Catalog({ etcd: etcdRef, cluster: cfg.clusterName, log });
  const http = buildHttp(
    exporter,
    metrics,
    {
      status: async () => ({
        ...statusCore(),
        // The mesh etcd down must not take the whole status with it (the export's etcd error says why it is empty).
        agents: await agentViews(etcdRef(), cfg.clusterName).catch(() => []),
      }),
      agentView: (node) => agentView(etcdRef(), cfg.clusterName, node),
    },
    { catalog, status: statusCore, drills: new DrillHistoryReader(rest) },
  );
  const [host, port] = cfg.listen.split(':') as [string, string];
  await http.listen({ host, port: Number(port) });
  const workloadIdentity = ca && (await startWorkloadIdentity(cfg, ca, kc, rest, etcdRef, log));
  const nodeCa = workloadIdentity?.nodeCa;
  serving.nodeCa = nodeCa;
  serving.workloadCa = workloadIdentity?.workloadCa;
  log.info({ listen: cfg.listen, meshEtcd: cfg.meshEtcd }, 'skein-apiserver listening');

  const nodeUsers = identity && new NodeUsers({ kc, rest, etcd: etcdRef, cluster: cfg.clusterName, log });
  const nodeSigner = ca && cfg.signNodeRequests ? new NodeCsrSigner({ kc, rest, ca, nodeIdentityTtlMs: cfg.nodeIdentityTtlMs, log }) : undefined;
  if (cfg.signNodeRequests && !ca) log.warn('--sign-node-requests needs this process to hold the cluster CA (an https mesh etcd without --mesh-etcd-cert): not signing');
  const shutdown = async () => {
    log.info('shutting down');
    await http.close();
    await catalog.stop();
    await nodeCa?.close();
    await serving.workloadCa?.stop();
    serving.meshEtcd?.stop();
    await sync.stop().catch(() => {});
    await maintenance?.stop();
    await nodeUsers?.stop();
    await nodeSigner?.stop();
    await exporter.stop().catch(() => {});
    identity?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());

  if (identity) {
    await retryUntilDone('setting up mesh etcd authorization', () => ensureMeshAuth(etcdRef(), cfg.clusterName), log);
    identity.start();
    nodeUsers!.start();
  }
  nodeSigner?.start();
  sync.start();
  catalog.start();
  issuer?.start();
  maintenance?.start();
  // The initial sync waits out a dead etcd or API server (retrying inside); readiness says when it is done.
  await exporter.start();
}

main().catch((err: Error) => {
  console.error(`skein-apiserver: ${err.stack ?? err.message}`);
  process.exit(1);
});
