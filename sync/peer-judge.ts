// Whether one key of a peer's export may reach the local cache. Nothing from a peer is trusted: a key
// outside its own export prefix or schema, a value that fails its schema or names another cluster, and
// anything the peer may not claim (address-policy.ts: the pin `skein connect` made, never loopback,
// link-local, this cluster's own networks, …) is refused with a reason. A peer's trust bundle must be for its
// own trust domain (`<peer>.skein`) and every CA in it must pass (mtls/trust-bundle.ts): a peer cannot
// publish a bundle for ours or a third cluster's, nor an empty or garbage one.
import { exportPrefix, parseExportKey, type ParsedKey } from '../mesh/schema/keys.js';
import { decodeValue, type Decoded } from '../mesh/schema/values.js';
import type { PeerPolicy, Rejection } from '../mesh/address-policy.js';
import { trustDomainOf } from '../mtls/cluster-ca.js';
import { checkBundle } from '../mtls/trust-bundle.js';

type Verdict = { ok: true; parsed: ParsedKey; decoded: Decoded } | { ok: false; rejection: Rejection };

/** Judges a key by its name in the peer's export and its raw value. */
export type Judge = (exportKey: string, raw: string) => Verdict;

export function peerJudge(remote: string, policy: PeerPolicy): Judge {
  const prefix = exportPrefix(remote);
  const no = (reason: Rejection['reason'], detail: string): Verdict => ({ ok: false, rejection: { reason, detail } });
  return (key, raw) => {
    const parsed = parseExportKey(key);
    if (!parsed || !key.startsWith(prefix)) return no('foreign-key', 'key is outside the remote export schema');
    if (parsed.cluster !== remote) return no('foreign-key', `key claims cluster ${parsed.cluster}, connection is to ${remote}`);
    const d = decodeValue(parsed, raw);
    if (!d.ok) return no('schema', d.error);
    if (d.kind === 'bundle') {
      const own = trustDomainOf(remote);
      if (d.value.trustDomain !== own) return no('bad-bundle', `a bundle for trust domain ${d.value.trustDomain}; ${remote} may publish only its own, ${own}`);
      const b = checkBundle(d.value.caPem, own);
      if (!b.ok) return no('bad-bundle', b.error);
    }
    const refused = policy.check(d);
    return refused ? { ok: false, rejection: refused } : { ok: true, parsed, decoded: d };
  };
}
