// PeerSource over etcd3: a peer's mesh etcd reached over mTLS with the identity it issued us.
import type { Etcd3, IKeyValue } from 'etcd3';
import { connectMeshEtcd, listPrefix } from '../mesh/etcd.js';
import { openWatch } from '../mesh/etcd-watch.js';
import { meshEtcdServerName } from '../mtls/mesh-identities.js';
import type { PeerKv, PeerSource, PeerWatch, PrefixWatchHandlers } from './peer-source.js';

const toPeerKv = (kv: IKeyValue): PeerKv => ({ key: kv.key.toString(), value: kv.value.toString(), modRevision: Number(kv.mod_revision) });

class EtcdPeerSource implements PeerSource {
  constructor(private readonly client: Etcd3) {}

  async list(prefix: string): Promise<{ kvs: PeerKv[]; revision: number }> {
    const res = await listPrefix(this.client, prefix);
    return { kvs: res.kvs.map(toPeerKv), revision: res.revision };
  }

  async watch(prefix: string, fromRevision: number, h: PrefixWatchHandlers): Promise<PeerWatch> {
    const watch = await openWatch(this.client, { prefix }, fromRevision);
    const w = watch.watcher;
    w.on('connected', () => h.link(true));
    w.on('disconnected', () => h.link(false));
    w.on('data', (res) => h.progress(Number(res.header.revision)));
    w.on('put', (kv) => h.put(toPeerKv(kv)));
    w.on('delete', (kv) => h.delete(toPeerKv(kv)));
    w.on('error', (err) => h.failed(err));
    return watch;
  }

  get(key: string): Promise<string | null> {
    return this.client.get(key).string();
  }

  async watchKey(key: string, onPut: (value: string) => void): Promise<PeerWatch> {
    const watch = await openWatch(this.client, { key });
    watch.watcher.on('put', (kv) => onPut(kv.value.toString()));
    watch.watcher.on('error', () => {
      /* replaced by the next relist's; the export watch reports the outage */
    });
    return watch;
  }

  close(): void {
    this.client.close();
  }
}

export function connectPeer(peer: { name: string; endpoint: string; caPem: string; certPem: string; keyPem: string }): PeerSource {
  const tls = { caPem: peer.caPem, certPem: peer.certPem, keyPem: peer.keyPem };
  return new EtcdPeerSource(connectMeshEtcd({ endpoints: [peer.endpoint], tls, serverName: meshEtcdServerName(peer.name) }));
}
