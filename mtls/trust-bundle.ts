// The one check every holder of a trust bundle makes: each CA certificate is a self-signed CA of exactly
// the trust domain it is filed under, unaltered and unexpired. A bundle is a PEM of one or more such CAs
// (SPIFFE's PEM bundle form): more than one while a CA rotates (the new one published before it signs, the
// old one kept until it is retired). The sync manager applies it to a peer's bundle before publishing it;
// agents apply it again before serving it.
import { X509Certificate } from 'node:crypto';

/** A bundle carries at most this many CAs: two while one rotates, with room for one rotation overlapping another. */
export const MAX_BUNDLE_CAS = 4;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle, each as its own PEM (text outside them is ignored). */
export function splitPemCertificates(pem: string): string[] {
  return (pem.match(PEM_CERT) ?? []).map((c) => `${c}\n`);
}

/** Concatenates CA certificates into one PEM bundle, without repeating one. */
export function joinPemCertificates(pems: string[]): string {
  return [...new Set(pems.flatMap(splitPemCertificates))].join('');
}

export function checkBundleCa(caPem: string, trustDomain: string, now = Date.now()): { ok: true; cert: X509Certificate } | { ok: false; error: string } {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(caPem);
  } catch (err) {
    return { ok: false, error: `caPem is not a certificate (${(err as Error).message})` };
  }
  if (!cert.ca) return { ok: false, error: 'the certificate is not a CA' };
  if (!cert.verify(cert.publicKey)) return { ok: false, error: 'the CA certificate does not verify under its own key (altered?)' };
  const uris = (cert.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('URI:'));
  if (uris.length !== 1 || uris[0] !== `URI:spiffe://${trustDomain}`) return { ok: false, error: `the CA certificate is not for trust domain ${trustDomain}` };
  if (new Date(cert.validTo).getTime() < now) return { ok: false, error: `the CA certificate expired at ${new Date(cert.validTo).toISOString()}` };
  return { ok: true, cert };
}

/**
 * A whole bundle: 1 to MAX_BUNDLE_CAS certificates, every one passing checkBundleCa, none repeated. One bad
 * CA refuses the whole bundle: a holder keeps its last good one rather than trust part of a forged one.
 */
export function checkBundle(pem: string, trustDomain: string, now = Date.now()): { ok: true; certs: X509Certificate[] } | { ok: false; error: string } {
  const pems = splitPemCertificates(pem);
  if (pems.length === 0) return { ok: false, error: `the bundle of ${trustDomain} holds no certificate` };
  if (pems.length > MAX_BUNDLE_CAS) return { ok: false, error: `the bundle of ${trustDomain} holds ${pems.length} certificates; at most ${MAX_BUNDLE_CAS}` };
  const certs: X509Certificate[] = [];
  for (const [i, p] of pems.entries()) {
    const r = checkBundleCa(p, trustDomain, now);
    if (!r.ok) return { ok: false, error: pems.length > 1 ? `CA ${i + 1} of ${pems.length}: ${r.error}` : r.error };
    if (certs.some((c) => c.fingerprint256 === r.cert.fingerprint256)) return { ok: false, error: `the bundle of ${trustDomain} holds the same CA twice` };
    certs.push(r.cert);
  }
  return { ok: true, certs };
}
