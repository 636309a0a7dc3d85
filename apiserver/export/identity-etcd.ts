// The identity bindings in the mesh etcd, releasable: `identity-index/<hash>` → local ID and
// `identity-ids/<local id>` → hash, created together (EtcdIdentityStore.tryBind) and deleted together here.
import { z } from 'zod';
import { listPrefix, type EtcdRef } from '../../mesh/etcd.js';
import { keys } from '../../mesh/schema/keys.js';
import { identityNumber, MAX_LOCAL_ID, type IdentityStore, type ReleasableIdentityStore } from './identity.js';

const LabelsHash = z.string().regex(/^[0-9a-f]{64}$/);
const LocalId = z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(1).max(MAX_LOCAL_ID));

/** Identity bindings: `identity-index/<hash>` → local ID, and the export key reserving the ID itself. */
class EtcdIdentityStore implements IdentityStore {
  constructor(
    private readonly etcd: EtcdRef,
    private readonly cluster: string,
  ) {}

  async lookup(hash: string): Promise<number | undefined> {
    const v = await this.etcd().get(keys.identityIndex(this.cluster, hash)).string();
    return v === null ? undefined : Number(v);
  }

  async tryBind(hash: string, localId: number): Promise<boolean> {
    const idKey = keys.identityId(this.cluster, localId);
    const c = this.etcd();
    const res = await c
      .if(keys.identityIndex(this.cluster, hash), 'Create', '==', 0)
      .and(idKey, 'Create', '==', 0)
      .then(c.put(keys.identityIndex(this.cluster, hash)).value(String(localId)), c.put(idKey).value(hash))
      .commit();
    return res.succeeded;
  }

  async boundIds(): Promise<Set<number>> {
    const index = await this.etcd().getAll().prefix(keys.identityIndex(this.cluster, '')).strings();
    return new Set(Object.values(index).map(Number));
  }
}

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
