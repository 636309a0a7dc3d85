// Deploys skein-apiserver into one local cluster exactly as on a real one: the shipped RBAC and Deployment
// manifests; the node runner gives its pod in-cluster credentials; `skein status` then reaches it through
// the Kubernetes API's service proxy.
import { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../../apiserver/kube/rest.js';
import { skeinProxyPath } from '../../apiserver/service-ref.js';
import { waitFor } from './daemon.js';
import { applyManifest, loadManifest } from './manifests.js';

export async function deploySkeinApiserver(o: { cluster: { name: string; id: number }; adminKubeconfig: string; meshEtcdUrl: string; logHint: string }): Promise<void> {
  const admin = new KubeConfig();
  admin.loadFromFile(o.adminKubeconfig);
  await applyManifest(admin, loadManifest('skein-rbac.yaml'));
  await applyManifest(admin, loadManifest('skein-apiserver.yaml', { CLUSTER_NAME: o.cluster.name, CLUSTER_ID: String(o.cluster.id), MESH_ETCD: o.meshEtcdUrl }));
  const rest = new KubeRest(admin);
  await waitFor(`skein-apiserver of ${o.cluster.name} to be ready`, async () => ((await rest.get<string>(skeinProxyPath('/readyz'))) !== undefined ? true : undefined), 90_000, o.logHint);
}
