// skein-apiserver: one per cluster. Exports the cluster's global services, identities and nodes into its
// mesh etcd and serves health, readiness, metrics and status over HTTP.
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { parseConfig } from './config.js';
import { Exporter } from './export/exporter.js';
import { StateWriter } from './export/writer.js';
import { buildHttp } from './http.js';
import { KubeRest } from './kube/rest.js';
import { connectMeshEtcd, EtcdIdentityStore, EtcdKv } from './mesh-etcd.js';
import { createMetrics } from './metrics.js';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = parseConfig(process.argv.slice(2));
  } catch (err) {
    console.error(`skein-apiserver: ${(err as Error).message}`);
    process.exit(2);
  }
  const log = pino({ base: { cluster: cfg.clusterName } });
  const kc = new KubeConfig();
  if (cfg.kubeconfig) kc.loadFromFile(cfg.kubeconfig);
  else kc.loadFromCluster();
  const metrics = createMetrics();
  const etcd = connectMeshEtcd({ endpoints: cfg.meshEtcd, caFile: cfg.meshEtcdCa, certFile: cfg.meshEtcdCert, keyFile: cfg.meshEtcdKey });
  let exporter!: Exporter;
  const writer = new StateWriter(new EtcdKv(etcd), {
    onBatch: (_ops, seconds) => metrics.etcdWrite.observe(seconds),
    onError: (err, attempt) => {
      metrics.etcdErrors.inc();
      exporter?.noteEtcdError(err);
      if (attempt === 1 || attempt % 20 === 0) log.warn({ err: (err as Error).message, attempt }, 'mesh etcd write failed, retrying');
    },
  });
  exporter = new Exporter({ cluster: cfg.clusterName, clusterId: cfg.clusterId, kc, rest: new KubeRest(kc), etcd, writer, identities: new EtcdIdentityStore(etcd, cfg.clusterName), metrics, log });
  const http = buildHttp(exporter, metrics);
  const [host, port] = cfg.listen.split(':') as [string, string];
  await http.listen({ host, port: Number(port) });
  log.info({ listen: cfg.listen, meshEtcd: cfg.meshEtcd }, 'skein-apiserver listening');

  const shutdown = async () => {
    log.info('shutting down');
    await http.close();
    await exporter.stop().catch(() => {});
    etcd.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());

  // The initial sync waits out a dead etcd or API server (retrying inside); readiness says when it is done.
  await exporter.start();
}

main().catch((err: Error) => {
  console.error(`skein-apiserver: ${err.stack ?? err.message}`);
  process.exit(1);
});
