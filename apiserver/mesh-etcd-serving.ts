// The mesh etcd's serving certificate, kept in the directory etcd reads it from (--mesh-etcd-serving-dir: a
// volume shared with a sidecar etcd) and renewed at half its lifetime. etcd loads --cert-file/--key-file on
// every TLS handshake, so a renewal needs no restart: connections open keep the old certificate, new ones get
// the new. etcd reads the two files one after the other, so the key is kept across renewals (only the
// certificate changes): a handshake between the two reads still pairs a certificate with its key. Each file
// is replaced by a rename, never rewritten in place.
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { ClusterCA } from '../mtls/cluster-ca.js';
import { meshEtcdServerSpec } from '../mtls/mesh-identities.js';
import { RenewingCertificate } from '../mtls/renewing-cert.js';
import { issueCertificateForKey, newPrivateKeyPem } from '../mtls/x509.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

/** The files the mesh etcd reads (--trusted-ca-file, --cert-file, --key-file), as the installer's init step writes them. */
export const meshEtcdServingFiles = (dir: string) => ({ ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') });

function replaceFile(path: string, content: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, path);
}

/** The IP addresses the certificate on disk names (the installer's: the pod IP from the Kubernetes API). */
function installedIps(certFile: string): string[] {
  if (!existsSync(certFile)) return [];
  const sans = new X509Certificate(readFileSync(certFile)).subjectAltName ?? '';
  return sans.split(', ').flatMap((san) => (san.startsWith('IP Address:') ? [san.slice('IP Address:'.length)] : []));
}

/** The IP addresses etcd is reached at: the ones it was installed with and those of the endpoints this process and its peers use. */
function meshEtcdIps(endpoints: string[], installed: string[]): string[] {
  const ips = new Set(['127.0.0.1', ...installed]);
  for (const e of endpoints) {
    const host = new URL(e).hostname.replace(/^\[|\]$/g, '');
    if (isIP(host)) ips.add(host);
  }
  return [...ips];
}

export async function keepMeshEtcdServing(o: { dir: string; ca: ClusterCA; endpoints: string[]; ttlMs: number; log: Log }): Promise<RenewingCertificate> {
  const files = meshEtcdServingFiles(o.dir);
  // The installer's key if there is one (etcd may be serving with it right now), else a new one.
  let keyPem = existsSync(files.key) ? readFileSync(files.key, 'utf8') : undefined;
  if (!keyPem) {
    keyPem = await newPrivateKeyPem();
    replaceFile(files.key, keyPem, 0o600);
  }
  const key = keyPem;
  const spec = meshEtcdServerSpec(o.ca, meshEtcdIps(o.endpoints, installedIps(files.cert)), o.ttlMs);
  const write = (c: { certPem: string }) => replaceFile(files.cert, c.certPem, 0o644);
  const cert = await RenewingCertificate.start({ what: 'the mesh etcd serving certificate', issue: () => issueCertificateForKey(o.ca.mesh, spec, key), onRenew: write, log: o.log });
  write(cert.current);
  o.log.info({ dir: o.dir, serial: cert.current.serial, notAfter: new Date(cert.current.notAfterMs).toISOString() }, 'mesh etcd serving certificate written; renewed at half-life');
  return cert;
}
