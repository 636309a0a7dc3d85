// One local cluster's Kubernetes control plane from the pinned, locally built binaries: etcd, kube-apiserver,
// kube-controller-manager (the controllers that turn Deployments into pods and pods into EndpointSlices)
// and kube-scheduler.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnDaemon, waitFor } from './daemon.js';
import { etcdDataDir, startEtcd } from './etcd.js';
import { httpsGet } from './https.js';
import { createKubePki, writeUserKubeconfig, type KubePki } from './kube-pki.js';
import { freePort } from './ports.js';
import { SERVICE_CIDR } from './topology.js';
import type { PemPair } from '../mtls/x509.js';

const KCM_CONTROLLERS = [
  'deployment-controller',
  'replicaset-controller',
  // The chart's skein-agent (real-kubelet nodes).
  'daemonset-controller',
  'endpointslice-controller',
  // The API server's service proxy (skein status) still resolves through v1 Endpoints.
  'endpoints-controller',
  'namespace-controller',
  'garbage-collector-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'root-ca-certificate-publisher-controller',
  // Removes the not-ready taint admission puts on new Nodes once the runner reports Ready.
  'node-lifecycle-controller',
];

export interface ControlPlane {
  apiserverUrl: string;
  kubeEtcdUrl: string;
  pki: KubePki;
  ca: PemPair;
  admin: PemPair;
}

export async function startControlPlane(opts: {
  cluster: string;
  clusterDir: string;
  cgroup: string;
  kubeBin: string;
  logDir: string;
  /** Where kube-apiserver listens: an address pods reach too (the root end of the fabric link). */
  bindIp: string;
  /** Real kubelets (with kube-proxy): the kubernetes Service gets its endpoint, kubelets serve on InternalIP. */
  realKubelets?: boolean;
  progress?: (msg: string) => void;
}): Promise<ControlPlane> {
  const { cluster, clusterDir, cgroup, kubeBin, logDir: logs, bindIp } = opts;
  const { pki, ca } = await createKubePki(join(clusterDir, 'pki'), cluster, [bindIp]);
  const etcd = await startEtcd({ name: `${cluster}-kube`, dataDir: etcdDataDir(clusterDir, 'kube'), cgroup: join(cgroup, 'kube-etcd'), logFile: join(logs, 'kube-etcd.log') });

  const port = await freePort(bindIp);
  const apiserverUrl = `https://${bindIp}:${port}`;
  spawnDaemon({
    cgroup: join(cgroup, 'kube-apiserver'),
    logFile: join(logs, 'kube-apiserver.log'),
    argv: [
      join(kubeBin, 'kube-apiserver'),
      `--etcd-servers=${etcd.clientUrl}`,
      `--secure-port=${port}`,
      `--bind-address=${bindIp}`,
      `--advertise-address=${bindIp}`,
      `--tls-cert-file=${pki.servingCert}`,
      `--tls-private-key-file=${pki.servingKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--allow-privileged=true',
      `--service-account-issuer=https://kubernetes.default.svc/${cluster}`,
      `--service-account-key-file=${pki.saPub}`,
      `--service-account-signing-key-file=${pki.saKey}`,
      // Node runners hand pods the API server's address; with kube-proxy, pods reach it as the kubernetes Service.
      `--endpoint-reconciler-type=${opts.realKubelets ? 'lease' : 'none'}`,
      // Node runners serve the kubelet API (logs) on the host's fabric address, published as ExternalIP;
      // kubelets on their node's address (InternalIP).
      `--kubelet-client-certificate=${pki.kubeletClientCert}`,
      `--kubelet-client-key=${pki.kubeletClientKey}`,
      '--kubelet-preferred-address-types=ExternalIP,InternalIP',
      '--profiling=false',
      '--v=1',
    ],
  });
  const admin = await writeUserKubeconfig(ca, apiserverUrl, { name: 'admin', commonName: 'skein-local-admin', organizations: ['system:masters'] }, join(clusterDir, 'kubeconfigs', 'admin.yaml'));
  const caPem = readFileSync(pki.caCert, 'utf8');
  await waitFor(
    `kube-apiserver of ${cluster}`,
    async () => ((await httpsGet(`${apiserverUrl}/readyz`, { ca: caPem, cert: admin.cert.certPem, key: admin.cert.keyPem })).status === 200 ? true : undefined),
    120_000,
    `see ${join(logs, 'kube-apiserver.log')}`,
  );
  opts.progress?.(`${cluster}: kube-apiserver ready`);

  const kcm = await writeUserKubeconfig(ca, apiserverUrl, { name: 'kcm', commonName: 'system:kube-controller-manager' }, join(clusterDir, 'kubeconfigs', 'kcm.yaml'));
  spawnDaemon({
    cgroup: join(cgroup, 'kube-controller-manager'),
    logFile: join(logs, 'kube-controller-manager.log'),
    argv: [
      join(kubeBin, 'kube-controller-manager'),
      `--kubeconfig=${kcm.file}`,
      `--authentication-kubeconfig=${kcm.file}`,
      `--authorization-kubeconfig=${kcm.file}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${await freePort()}`,
      '--leader-elect=false',
      `--controllers=${KCM_CONTROLLERS.join(',')}`,
      `--service-account-private-key-file=${pki.saKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--cluster-name=${cluster}`,
      '--use-service-account-credentials=true',
      // Scale-to-zero must show up in EndpointSlices at once, not after the default 1 s batch.
      '--endpointslice-updates-batch-period=0s',
      '--concurrent-deployment-syncs=5',
      '--v=1',
    ],
  });

  const sched = await writeUserKubeconfig(ca, apiserverUrl, { name: 'scheduler', commonName: 'system:kube-scheduler' }, join(clusterDir, 'kubeconfigs', 'scheduler.yaml'));
  spawnDaemon({
    cgroup: join(cgroup, 'kube-scheduler'),
    logFile: join(logs, 'kube-scheduler.log'),
    argv: [
      join(kubeBin, 'kube-scheduler'),
      `--kubeconfig=${sched.file}`,
      `--authentication-kubeconfig=${sched.file}`,
      `--authorization-kubeconfig=${sched.file}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${await freePort()}`,
      '--leader-elect=false',
      '--v=1',
    ],
  });
  return { apiserverUrl, kubeEtcdUrl: etcd.clientUrl, pki, ca, admin: admin.cert };
}
