// etcd's own authorization on the mesh etcd: with client-certificate auth, a certificate's CN is its etcd
// user. `root` (the local skein-apiserver) may do anything; every connected peer's `remote-<peer>` user
// reads this cluster's export prefix (and its own renewed credential) and nothing else; every node's
// `node-<node>` user reads what its datapath and Workload API need and writes only its own agent view (header and frontend shards).
// Idempotent, and writes only what is missing (see etcd-rbac.ts).
import { Range, type Etcd3 } from 'etcd3';
import { ETCD_ROOT_USER, NODE_USER_PREFIX, nodeUser, remoteUser } from '../mtls/mesh-identities.js';
import { ensureRole, ensureUser, removeRole, removeUser } from './etcd-rbac.js';
import { datapathPrefixes, exportPrefix, keys, ROOT } from '../mesh/schema/keys.js';

const READ_EXPORT_ROLE = 'skein-read-export';
/** Reads shared by every node agent. */
const NODE_READ_ROLE = 'skein-node';
/** Before per-node identities, all agents shared one user and role: removed at start. */
const LEGACY_AGENT = 'skein-agent';
const nodeRole = (node: string) => `skein-node-${node}`;
const credentialRole = (peer: string) => `skein-credential-${peer}`;
const REMOTE_USER_PREFIX = remoteUser('');

export async function ensureMeshAuth(etcd: Etcd3, cluster: string): Promise<void> {
  await ensureRole(etcd, 'root', []);
  await ensureUser(etcd, ETCD_ROOT_USER, ['root']);
  await ensureRole(etcd, READ_EXPORT_ROLE, [{ permission: 'Read', range: Range.prefix(exportPrefix(cluster)) }]);
  await ensureRole(etcd, NODE_READ_ROLE, [
    ...[...datapathPrefixes(cluster), keys.bundlesPrefix(cluster)].map((p) => ({ permission: 'Read' as const, range: Range.prefix(p) })),
    { permission: 'Read', range: new Range(keys.nodeCa(cluster)) },
  ]);
  await removeUser(etcd, LEGACY_AGENT);
  await removeRole(etcd, LEGACY_AGENT);
  await etcd.auth.authEnable();
}

/** The etcd users of this cluster's nodes, made to match `nodes` exactly: each writes only its own view. */
export async function syncNodeUsers(etcd: Etcd3, cluster: string, nodes: string[]): Promise<void> {
  const want = new Set(nodes);
  for (const node of want) {
    await ensureRole(etcd, nodeRole(node), [
      { permission: 'Readwrite', range: new Range(keys.agent(cluster, node)) },
      // Its frontends' shards (mesh/agent-view.ts): `<node>/` so node a never reaches node a-b's.
      { permission: 'Readwrite', range: Range.prefix(keys.agentFrontendsPrefix(cluster, node)) },
    ]);
    await ensureUser(etcd, nodeUser(node), [NODE_READ_ROLE, nodeRole(node)]);
  }
  await pruneUsers(etcd, NODE_USER_PREFIX, want, nodeRole);
}

/** Removes the users `<prefix><name>` whose name is not in `keep`, and each one's own role. */
async function pruneUsers(etcd: Etcd3, prefix: string, keep: Set<string>, roleOf: (name: string) => string): Promise<void> {
  const have = (await etcd.getUsers()).map((u) => u.name).filter((n) => n.startsWith(prefix));
  for (const user of have) {
    const name = user.slice(prefix.length);
    if (keep.has(name)) continue;
    await removeUser(etcd, user);
    await removeRole(etcd, roleOf(name));
  }
}

/** The etcd users of connected peers, made to match `peers` exactly; each may also read its own renewals. */
export async function syncPeerUsers(etcd: Etcd3, cluster: string, peers: string[]): Promise<void> {
  const want = new Set(peers);
  for (const peer of want) {
    await ensureRole(etcd, credentialRole(peer), [{ permission: 'Read', range: new Range(`${ROOT}/credentials/${cluster}/${peer}`) }]);
    await ensureUser(etcd, remoteUser(peer), [READ_EXPORT_ROLE, credentialRole(peer)]);
  }
  await pruneUsers(etcd, REMOTE_USER_PREFIX, want, credentialRole);
}
