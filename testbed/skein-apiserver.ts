// Deploys skein-apiserver into one local cluster exactly as on a real one: the shipped RBAC and Deployment
// manifests; the node runner gives its pod in-cluster credentials; `skein status` then reaches it through
// the Kubernetes API's service proxy.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../mesh/kube/rest.js';
import { KubeSecrets } from '../mesh/kube/secrets.js';
import { ensureClusterCA, type ClusterCA } from '../mtls/cluster-ca.js';
import { issueMeshEtcdServer, issueMeshRootClient } from '../mtls/mesh-identities.js';
import { etcdDataDir, startEtcd } from './etcd.js';
import { skeinProxyPath } from '../mesh/service-ref.js';
import { waitFor } from './daemon.js';
import { applyManifest, loadManifest } from './manifests.js';
import { SERVICE_CIDR } from './topology.js';

/** Files of the mesh etcd's PKI; root.* is the test bed's own etcd root identity (like the admin kubeconfig). */
export const meshPki = (clusterDir: string) => {
  const dir = join(clusterDir, 'mesh-pki');
  return { dir, ca: join(dir, 'ca.crt'), caKey: join(dir, 'ca.key'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), rootCert: join(dir, 'root.crt'), rootKey: join(dir, 'root.key'), argv: join(dir, 'etcd.argv.json') };
};

/** The test bed's root identity on the cluster's mesh etcd and the CA to check it by (meshPki's ca, root*). */
export async function writeMeshRootIdentity(clusterDir: string, ca: ClusterCA): Promise<ReturnType<typeof meshPki>> {
  const pki = meshPki(clusterDir);
  mkdirSync(pki.dir, { recursive: true, mode: 0o700 });
  const root = await issueMeshRootClient(ca);
  writeFileSync(pki.ca, ca.mesh.certPem);
  writeFileSync(pki.rootCert, root.certPem);
  writeFileSync(pki.rootKey, root.keyPem, { mode: 0o600 });
  return pki;
}

/**
 * The cluster's mesh etcd with TLS and client-certificate authentication. Its CA is the cluster's mesh CA
 * (the skein-ca Secret, created here on first use exactly as skein-apiserver would).
 */
export async function startMeshEtcd(o: { cluster: string; clusterDir: string; logDir: string; cgroup: string; hostIp: string; adminKubeconfig: string }) {
  const admin = new KubeConfig();
  admin.loadFromFile(o.adminKubeconfig);
  await applyManifest(admin, loadManifest('skein-rbac.yaml'));
  const ca = await ensureClusterCA(new KubeSecrets(new KubeRest(admin)), o.cluster);
  const pki = await writeMeshRootIdentity(o.clusterDir, ca);
  const server = await issueMeshEtcdServer(ca, [o.hostIp, '127.0.0.1']);
  // The test bed plays the installer: it issues node certificates for the agents from the mesh CA.
  writeFileSync(pki.caKey, ca.mesh.keyPem, { mode: 0o600 });
  writeFileSync(pki.cert, server.certPem);
  writeFileSync(pki.key, server.keyPem, { mode: 0o600 });
  return startEtcd({ name: `${o.cluster}-mesh`, dataDir: etcdDataDir(o.clusterDir, 'mesh'), cgroup: o.cgroup, logFile: join(o.logDir, 'mesh-etcd.log'), host: o.hostIp, tls: { certFile: pki.cert, keyFile: pki.key, trustedCaFile: pki.ca }, argvFile: pki.argv });
}

export async function deploySkeinApiserver(o: { cluster: { name: string; id: number }; adminKubeconfig: string; meshEtcdUrl: string; logHint: string }): Promise<void> {
  const admin = new KubeConfig();
  admin.loadFromFile(o.adminKubeconfig);
  await applyManifest(admin, loadManifest('skein-apiserver.yaml', { CLUSTER_NAME: o.cluster.name, CLUSTER_ID: String(o.cluster.id), MESH_ETCD: o.meshEtcdUrl, SERVICE_CIDR }));
  const rest = new KubeRest(admin);
  await waitFor(`skein-apiserver of ${o.cluster.name} to be ready`, async () => ((await rest.get<string>(skeinProxyPath('/readyz'))) !== undefined ? true : undefined), 90_000, o.logHint);
}
