// The identity bindings in the mesh etcd, releasable: `identity-index/<hash>` → local ID and
// `identity-ids/<local id>` → hash, created together (EtcdIdentityStore.tryBind) and deleted together here.
import { z } from 'zod';
import { EtcdIdentityStore, listPrefix, type EtcdRef } from '../mesh-etcd.js';
import { keys } from '../schema/keys.js';
import { identityNumber, MAX_LOCAL_ID, type ReleasableIdentityStore } from './identity.js';

const LabelsHash = z.string().regex(/^[0-9a-f]{64}$/);
const LocalId = z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(1).max(MAX_LOCAL_ID));

export class EtcdReleasableIdentityStore extends EtcdIdentityStore implements ReleasableIdentityStore {
  constructor(
    private readonly client: EtcdRef,
    private readonly clusterName: string,
    private readonly clusterId: number,
  ) {
    super(client, clusterName);
  }

  /** Every well-formed binding (a malformed key or value is skipped, never released by us). */
  async bindings(): Promise<Map<string, number>> {
    const prefix = keys.identityIndex(this.clusterName, '');
    const { kvs } = await listPrefix(this.client(), prefix);
    const out = new Map<string, number>();
    for (const kv of kvs) {
      const hash = LabelsHash.safeParse(kv.key.toString().slice(prefix.length));
      const id = LocalId.safeParse(kv.value.toString());
      if (hash.success && id.success) out.set(hash.data, id.data);
    }
    return out;
  }

  /** One transaction: both keys still name each other, and no exported identity key says it is in use. */
  async release(hash: string, localId: number): Promise<boolean> {
    const indexKey = keys.identityIndex(this.clusterName, hash);
    const idKey = keys.identityId(this.clusterName, localId);
    const c = this.client();
    const res = await c
      .if(indexKey, 'Value', '==', String(localId))
      .and(idKey, 'Value', '==', hash)
      .and(keys.identity(this.clusterName, identityNumber(this.clusterId, localId)), 'Create', '==', 0)
      .then(c.delete().key(indexKey), c.delete().key(idKey))
      .commit();
    return res.succeeded;
  }
}
