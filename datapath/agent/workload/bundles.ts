// Trust bundles as the agent accepts them from its mesh etcd: each must be a self-signed CA certificate of
// the trust domain it is filed under (URI SAN spiffe://<td>). Anything else (a tampered or mislabeled
// bundle) is refused with a reason and never served; the last good bundle of that domain stays.
import { X509Certificate } from 'node:crypto';
import { TrustBundle } from '../../../apiserver/schema/values.js';

export interface AcceptedBundle {
  trustDomain: string;
  own: boolean;
  caPem: string;
  der: Buffer;
}

export function acceptBundle(raw: string, keyTrustDomain: string): { ok: true; bundle: AcceptedBundle } | { ok: false; error: string } {
  let parsed;
  try {
    parsed = TrustBundle.safeParse(JSON.parse(raw));
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  if (!parsed.success) return { ok: false, error: `${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}` };
  const b = parsed.data;
  if (b.trustDomain !== keyTrustDomain) return { ok: false, error: `filed under ${keyTrustDomain} but names ${b.trustDomain}` };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(b.caPem);
  } catch (err) {
    return { ok: false, error: `caPem is not a certificate (${(err as Error).message})` };
  }
  if (!cert.ca) return { ok: false, error: 'the certificate is not a CA' };
  if (!cert.verify(cert.publicKey)) return { ok: false, error: 'the CA certificate does not verify under its own key (altered?)' };
  if (!(cert.subjectAltName ?? '').split(', ').includes(`URI:spiffe://${b.trustDomain}`)) return { ok: false, error: `the CA certificate is not for trust domain ${b.trustDomain}` };
  if (new Date(cert.validTo).getTime() < Date.now()) return { ok: false, error: `the CA certificate expired at ${new Date(cert.validTo).toISOString()}` };
  return { ok: true, bundle: { trustDomain: b.trustDomain, own: b.own, caPem: b.caPem, der: cert.raw } };
}
