// The one check every holder of a trust bundle makes: the CA certificate is a self-signed CA of exactly
// the trust domain it is filed under, unaltered and unexpired. The sync manager applies it to a peer's
// bundle before publishing it; agents apply it again before serving it.
import { X509Certificate } from 'node:crypto';

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
