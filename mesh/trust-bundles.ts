// Trust bundles in the local mesh etcd, for this cluster's agents to serve on the Workload API: this
// cluster's own workload CA(s) and those of every connected peer (first from its skein-remote Secret, then
// as the peer exports it, so a peer's CA rotation reaches our agents).
// Bundles of different trust domains stay separate, as SPIFFE federation requires. Each is filed under its
// trust domain and owned by one cluster: a peer's link can never overwrite or remove the bundle of this
// cluster or of another peer, whatever trust domain it claims.
import type { Etcd3 } from 'etcd3';
import { keys } from './schema/keys.js';
import { decodeJson, encodeValue, TrustBundle } from './schema/values.js';

export class BundleOwnershipError extends Error {}

async function ownerOf(etcd: Etcd3, key: string): Promise<{ bundle?: TrustBundle; modRevision: string }> {
  const res = await etcd.get(key).exec();
  const kv = res.kvs[0];
  if (!kv) return { modRevision: '0' };
  return { bundle: decodeJson(TrustBundle, kv.value.toString()), modRevision: kv.mod_revision };
}

/**
 * Writes `bundle` unless its trust domain's bundle belongs to another cluster (then throws). An unchanged
 * bundle is not written again: every agent watches these keys. Returns whether it was written.
 */
export async function publishBundle(etcd: Etcd3, localCluster: string, bundle: TrustBundle): Promise<boolean> {
  const key = keys.bundle(localCluster, bundle.trustDomain);
  const { bundle: current, modRevision } = await ownerOf(etcd, key);
  if (current && (current.cluster !== bundle.cluster || current.own !== bundle.own)) {
    throw new BundleOwnershipError(`trust domain ${bundle.trustDomain} already belongs to ${current.own ? 'this cluster' : `cluster ${current.cluster}`}; ${bundle.cluster} may not replace its bundle`);
  }
  if (current?.caPem === bundle.caPem) return false;
  // Compare-and-put: a concurrent writer of the same trust domain cannot slip in between check and write.
  const put = await etcd.if(key, 'Mod', '==', modRevision).then(etcd.put(key).value(encodeValue(TrustBundle, bundle))).commit();
  if (!put.succeeded) throw new BundleOwnershipError(`trust domain ${bundle.trustDomain}'s bundle changed while it was being written; retrying`);
  return true;
}

/** Removes the bundle of `trustDomain` if `owner` (a peer) owns it; this cluster's own is never removed. */
export async function removeBundle(etcd: Etcd3, localCluster: string, trustDomain: string, owner: string): Promise<boolean> {
  const key = keys.bundle(localCluster, trustDomain);
  const { bundle, modRevision } = await ownerOf(etcd, key);
  if (bundle && (bundle.own || bundle.cluster !== owner)) return false;
  const res = await etcd.if(key, 'Mod', '==', modRevision).then(etcd.delete().key(key)).commit();
  return res.succeeded;
}

/** Deletes peers' bundles whose trust domain is no longer trusted (a peer disconnected while this process was down). */
export async function pruneBundles(etcd: Etcd3, localCluster: string, keep: Set<string>): Promise<string[]> {
  const prefix = keys.bundlesPrefix(localCluster);
  const gone: string[] = [];
  for (const [key, raw] of Object.entries(await etcd.getAll().prefix(prefix).strings())) {
    const td = key.slice(prefix.length);
    if (keep.has(td)) continue;
    if (decodeJson(TrustBundle, raw)?.own) continue;
    await etcd.delete().key(key);
    gone.push(td);
  }
  return gone;
}
