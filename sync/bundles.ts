// Trust bundles in the local mesh etcd, for this cluster's agents to serve on the Workload API: this
// cluster's own CA and the CA of every connected peer (from its skein-remote Secret). Bundles of different
// trust domains stay separate, as SPIFFE federation requires; disconnect removes the peer's.
import type { Etcd3 } from 'etcd3';
import { keys } from '../apiserver/schema/keys.js';
import { encodeValue, TrustBundle } from '../apiserver/schema/values.js';

export async function publishBundle(etcd: Etcd3, localCluster: string, bundle: TrustBundle): Promise<void> {
  await etcd.put(keys.bundle(localCluster, bundle.trustDomain)).value(encodeValue(TrustBundle, bundle));
}

export async function removeBundle(etcd: Etcd3, localCluster: string, trustDomain: string): Promise<void> {
  await etcd.delete().key(keys.bundle(localCluster, trustDomain));
}

/** Deletes bundles of trust domains no longer trusted (a peer disconnected while this process was down). */
export async function pruneBundles(etcd: Etcd3, localCluster: string, keep: Set<string>): Promise<string[]> {
  const prefix = keys.bundlesPrefix(localCluster);
  const gone = (await etcd.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)).filter((td) => !keep.has(td));
  for (const td of gone) await removeBundle(etcd, localCluster, td);
  return gone;
}
