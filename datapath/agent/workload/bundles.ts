// Trust bundles as the agent accepts them from its mesh etcd: one or more self-signed CA certificates of
// the trust domain it is filed under (URI SAN spiffe://<td>; two while a CA rotates). Anything else (a
// tampered or mislabeled bundle, an empty one) is refused with a reason and never served; the last good
// bundle of that domain stays.
import type { X509Certificate } from 'node:crypto';
import { firstIssue } from '../../../mesh/schema/issue.js';
import { TrustBundle } from '../../../mesh/schema/values.js';
import { checkBundle } from '../../../mtls/trust-bundle.js';

export interface AcceptedBundle {
  trustDomain: string;
  own: boolean;
  caPem: string;
  /** The CAs' DER, concatenated: the Workload API's X.509 bundle form. */
  der: Buffer;
  /** The CAs' certificates, to tell which of them signed an SVID. */
  cas: X509Certificate[];
}

export function acceptBundle(raw: string, keyTrustDomain: string): { ok: true; bundle: AcceptedBundle } | { ok: false; error: string } {
  let parsed;
  try {
    parsed = TrustBundle.safeParse(JSON.parse(raw));
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  if (!parsed.success) return { ok: false, error: firstIssue(parsed.error) };
  const b = parsed.data;
  if (b.trustDomain !== keyTrustDomain) return { ok: false, error: `filed under ${keyTrustDomain} but names ${b.trustDomain}` };
  const ca = checkBundle(b.caPem, b.trustDomain);
  if (!ca.ok) return ca;
  return { ok: true, bundle: { trustDomain: b.trustDomain, own: b.own, caPem: b.caPem, der: Buffer.concat(ca.certs.map((c) => c.raw)), cas: ca.certs } };
}
