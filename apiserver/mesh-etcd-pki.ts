// skein-apiserver's init step in a Kubernetes install (the Helm chart's init container): makes sure the
// cluster's CAs exist (Secrets skein-ca and skein-workload-ca, created on first start exactly as the
// apiserver would) and writes the mesh etcd's serving certificate, signed by the mesh CA, for the etcd
// sidecar of the same pod. The CA key never leaves the Secret: only ca.crt, server.crt and server.key are
// written, to a volume shared with the etcd container alone.
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { ensureClusterCA } from '../mtls/cluster-ca.js';
import { issueMeshEtcdServer } from '../mtls/mesh-identities.js';
import { KubeRest } from '../mesh/kube/rest.js';
import { KubeSecrets } from '../mesh/kube/secrets.js';
import { ClusterName } from '../mesh/schema/cluster.js';
import { meshEtcdServingFiles } from './mesh-etcd-serving.js';

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'cluster-name': { type: 'string' }, out: { type: 'string' }, ip: { type: 'string', multiple: true }, kubeconfig: { type: 'string' } } });
  const name = ClusterName.safeParse(values['cluster-name'] ?? process.env.SKEIN_CLUSTER_NAME);
  if (!name.success) throw new Error(`--cluster-name: ${name.error.issues[0]?.message}`);
  if (!values.out) throw new Error('--out is required (the directory the etcd container reads its certificate from)');
  const ips = ['127.0.0.1', ...(values.ip ?? []).flatMap((s) => s.split(',')).filter(Boolean)];
  const bad = ips.find((ip) => !IPV4.test(ip));
  if (bad) throw new Error(`--ip "${bad}": give IPv4 addresses (the pod IP, from status.podIP)`);
  const kc = new KubeConfig();
  if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
  else kc.loadFromCluster();
  const ca = await ensureClusterCA(new KubeSecrets(new KubeRest(kc)), name.data);
  const server = await issueMeshEtcdServer(ca, ips);
  mkdirSync(values.out, { recursive: true });
  const files = meshEtcdServingFiles(values.out);
  writeFileSync(files.ca, ca.mesh.certPem);
  writeFileSync(files.cert, server.certPem);
  writeFileSync(files.key, server.keyPem, { mode: 0o600 });
  console.log(`mesh etcd certificate for ${name.data} written to ${values.out} (addresses ${ips.join(', ')})`);
}

main().catch((err: Error) => {
  console.error(`skein-apiserver mesh-etcd-pki: ${err.message}`);
  process.exit(1);
});
