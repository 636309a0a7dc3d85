// skein-apiserver: one per cluster. Exports the cluster's global services, identities and nodes into its
// mesh etcd, replicates connected remote clusters' exports into the local cache, and serves health,
// readiness, metrics and status over HTTP.
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { ensureClusterCA, type ClusterCA } from '../mtls/cluster-ca.js';
import { issueMeshRootClient } from '../mtls/mesh-identities.js';
import { CredentialIssuer } from '../sync/credentials.js';
import { SyncManager } from '../sync/manager.js';
import { parseConfig, type ApiserverConfig } from './config.js';
import { Exporter } from './export/exporter.js';
import { StateWriter } from './export/writer.js';
import { buildHttp } from './http.js';
import { KubeRest } from './kube/rest.js';
import { KubeSecrets } from './kube/secrets.js';
import { ensureMeshAuth } from './mesh-auth.js';
import { connectMeshEtcd, EtcdIdentityStore, EtcdKv } from './mesh-etcd.js';
import { createMetrics } from './metrics.js';
import { retryUntilDone } from './retry.js';

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
  // itself that identity from the cluster CA (created on first start) and sets up etcd's own RBAC.
  let ca: ClusterCA | undefined;
  let tls: { caPem: string; certPem: string; keyPem: string } | undefined;
  if (cfg.meshEtcd[0]!.startsWith('https:') && !cfg.meshEtcdCert) {
    ca = await retryUntilDone('loading the cluster CA', () => ensureClusterCA(new KubeSecrets(rest), cfg.clusterName), log);
    const root = await issueMeshRootClient(ca, cfg.clusterName);
    tls = { caPem: ca.ca.certPem, certPem: root.certPem, keyPem: root.keyPem };
  }
  const etcd = connectMeshEtcd({ endpoints: cfg.meshEtcd, caFile: cfg.meshEtcdCa, certFile: cfg.meshEtcdCert, keyFile: cfg.meshEtcdKey, tls });

  let exporter!: Exporter;
  const writer = new StateWriter(new EtcdKv(etcd), {
    onBatch: (_ops, seconds) => metrics.etcdWrite.observe(seconds),
    onError: (err, attempt) => {
      metrics.etcdErrors.inc();
      exporter?.noteEtcdError(err);
      if (attempt === 1 || attempt % 20 === 0) log.warn({ err: (err as Error).message, attempt }, 'mesh etcd write failed, retrying');
    },
  });
  exporter = new Exporter({ cluster: cfg.clusterName, clusterId: cfg.clusterId, kc, rest, etcd, writer, identities: new EtcdIdentityStore(etcd, cfg.clusterName), metrics, log });
  const issuer = ca && new CredentialIssuer({ etcd, ca, cluster: cfg.clusterName, ttlMs: cfg.remoteIdentityTtlMs, log });
  const sync = new SyncManager({ kc, rest, secrets: new KubeSecrets(rest), local: etcd, localCluster: cfg.clusterName, log, issuer, staleAfterMs: cfg.remoteStaleAfterMs, removeAfterMs: cfg.remoteRemoveAfterMs });
  const meshEndpoint = cfg.meshAdvertise ?? cfg.meshEtcd[0]!;
  const http = buildHttp(exporter, metrics, () => ({ ...exporter.status(), meshEndpoint, trustDomain: ca?.trustDomain, remotes: sync.status() }));
  const [host, port] = cfg.listen.split(':') as [string, string];
  await http.listen({ host, port: Number(port) });
  log.info({ listen: cfg.listen, meshEtcd: cfg.meshEtcd }, 'skein-apiserver listening');

  const shutdown = async () => {
    log.info('shutting down');
    await http.close();
    await sync.stop().catch(() => {});
    await exporter.stop().catch(() => {});
    etcd.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());

  if (tls) await retryUntilDone('setting up mesh etcd authorization', () => ensureMeshAuth(etcd, cfg.clusterName), log);
  sync.start();
  issuer?.start();
  // The initial sync waits out a dead etcd or API server (retrying inside); readiness says when it is done.
  await exporter.start();
}

main().catch((err: Error) => {
  console.error(`skein-apiserver: ${err.stack ?? err.message}`);
  process.exit(1);
});
