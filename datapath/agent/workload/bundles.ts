// Trust bundles as the agent accepts them from its mesh etcd: each must be a self-signed CA certificate of
// the trust domain it is filed under (URI SAN spiffe://<td>). Anything else (a tampered or mislabeled
// bundle) is refused with a reason and never served; the last good bundle of that domain stays.
import { firstIssue } from '../../../mesh/schema/issue.js';
import { TrustBundle } from '../../../mesh/schema/values.js';
import { checkBundleCa } from '../../../mtls/trust-bundle.js';

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
  if (!parsed.success) return { ok: false, error: firstIssue(parsed.error) };
  const b = parsed.data;
  if (b.trustDomain !== keyTrustDomain) return { ok: false, error: `filed under ${keyTrustDomain} but names ${b.trustDomain}` };
  const ca = checkBundleCa(b.caPem, b.trustDomain);
  if (!ca.ok) return ca;
  return { ok: true, bundle: { trustDomain: b.trustDomain, own: b.own, caPem: b.caPem, der: ca.cert.raw } };
}
