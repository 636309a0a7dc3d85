// Each local cluster's Kubernetes PKI and kubeconfigs: a cluster CA, the API server's serving certificate,
// one client certificate per component (RBAC identities as kubeadm names them) and the service-account key.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { createCA, issueCertificate, newPrivateKeyPem, publicKeyPem, type PemPair } from '../mtls/x509.js';

const YEAR = 365 * 24 * 3600_000;

export interface KubePki {
  dir: string;
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  saKey: string;
  saPub: string;
  /** The node runners' kubelet API serving pair, and the API server's client pair for it. */
  kubeletCert: string;
  kubeletKey: string;
  kubeletClientCert: string;
  kubeletClientKey: string;
}

export interface KubeUser {
  name: string;
  commonName: string;
  organizations?: string[];
}

export async function createKubePki(dir: string, cluster: string, extraIps: string[] = []): Promise<{ pki: KubePki; ca: PemPair }> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await createCA({ commonName: `skein-local-${cluster}-ca`, ttlMs: YEAR });
  const serving = await issueCertificate(ca, {
    commonName: 'kube-apiserver',
    dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
    ipAddresses: ['127.0.0.1', '100.64.0.1', ...extraIps],
    usage: 'server',
    ttlMs: YEAR,
  });
  const kubelet = await issueCertificate(ca, { commonName: 'skein-node-runner', ipAddresses: extraIps, usage: 'server', ttlMs: YEAR });
  const kubeletClient = await issueCertificate(ca, { commonName: 'kube-apiserver-kubelet-client', organizations: ['system:masters'], usage: 'client', ttlMs: YEAR });
  const saKey = await newPrivateKeyPem();
  const pki: KubePki = {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    servingCert: join(dir, 'apiserver.crt'),
    servingKey: join(dir, 'apiserver.key'),
    saKey: join(dir, 'sa.key'),
    saPub: join(dir, 'sa.pub'),
    kubeletCert: join(dir, 'kubelet.crt'),
    kubeletKey: join(dir, 'kubelet.key'),
    kubeletClientCert: join(dir, 'apiserver-kubelet-client.crt'),
    kubeletClientKey: join(dir, 'apiserver-kubelet-client.key'),
  };
  writeFileSync(pki.caCert, ca.certPem);
  writeFileSync(pki.caKey, ca.keyPem, { mode: 0o600 });
  writeFileSync(pki.servingCert, serving.certPem);
  writeFileSync(pki.servingKey, serving.keyPem, { mode: 0o600 });
  writeFileSync(pki.saKey, saKey, { mode: 0o600 });
  writeFileSync(pki.kubeletCert, kubelet.certPem);
  writeFileSync(pki.kubeletKey, kubelet.keyPem, { mode: 0o600 });
  writeFileSync(pki.kubeletClientCert, kubeletClient.certPem);
  writeFileSync(pki.kubeletClientKey, kubeletClient.keyPem, { mode: 0o600 });
  writeFileSync(pki.saPub, publicKeyPem(saKey));
  return { pki, ca };
}

export interface KubeconfigEntry {
  context: string;
  server: string;
  caPem: string;
  user: PemPair;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

export function kubeconfigYaml(entries: KubeconfigEntry[], current?: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: entries.map((e) => ({ name: e.context, cluster: { server: e.server, 'certificate-authority-data': b64(e.caPem) } })),
    users: entries.map((e) => ({ name: e.context, user: { 'client-certificate-data': b64(e.user.certPem), 'client-key-data': b64(e.user.keyPem) } })),
    contexts: entries.map((e) => ({ name: e.context, context: { cluster: e.context, user: e.context } })),
    'current-context': current ?? entries[0]?.context ?? '',
  });
}

/** Issues a client certificate for `user` and writes a kubeconfig for it; returns the file path. */
export async function writeUserKubeconfig(ca: PemPair, server: string, user: KubeUser, file: string): Promise<{ file: string; cert: PemPair }> {
  const cert = await issueCertificate(ca, { commonName: user.commonName, organizations: user.organizations, usage: 'client', ttlMs: YEAR });
  if (!existsSync(file)) mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, kubeconfigYaml([{ context: user.name, server, caPem: ca.certPem, user: cert }]), { mode: 0o600 });
  return { file, cert };
}
