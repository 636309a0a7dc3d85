// etcd's own authorization on the mesh etcd: with client-certificate auth, a certificate's CN is its etcd
// user. `root` (the local skein-apiserver) may do anything; every connected peer's `remote-<peer>` user gets
// one role that reads this cluster's export prefix and nothing else. Idempotent, run at every start.
import { randomBytes } from 'node:crypto';
import { Range, type Etcd3 } from 'etcd3';
import { AGENT_USER, ETCD_ROOT_USER, remoteUser } from '../mtls/mesh-identities.js';
import { exportPrefix, keys, ROOT } from './schema/keys.js';

export const READ_EXPORT_ROLE = 'skein-read-export';
export const AGENT_ROLE = 'skein-agent';

const ignoreExists = (err: unknown) => {
  if (!/already exists|exist/i.test((err as Error)?.message ?? '')) throw err;
};

export async function ensureMeshAuth(etcd: Etcd3, cluster: string): Promise<void> {
  const users = new Set((await etcd.getUsers()).map((u) => u.name));
  const roles = new Set((await etcd.getRoles()).map((r) => r.name));
  if (!roles.has('root')) await etcd.role('root').create().catch(ignoreExists);
  // Passwords are never used (certificates are), but etcd requires one: a random one nobody knows.
  if (!users.has(ETCD_ROOT_USER)) await etcd.user(ETCD_ROOT_USER).create(randomBytes(24).toString('base64')).catch(ignoreExists);
  await etcd.user(ETCD_ROOT_USER).addRole('root');
  if (!roles.has(READ_EXPORT_ROLE)) await etcd.role(READ_EXPORT_ROLE).create().catch(ignoreExists);
  await etcd.role(READ_EXPORT_ROLE).grant({ permission: 'Read', range: Range.prefix(exportPrefix(cluster)) });
  // Node agents read everything Skein keeps here and write nothing but their own published views.
  if (!roles.has(AGENT_ROLE)) await etcd.role(AGENT_ROLE).create().catch(ignoreExists);
  await etcd.role(AGENT_ROLE).grant({ permission: 'Read', range: Range.prefix(`${ROOT}/`) });
  await etcd.role(AGENT_ROLE).grant({ permission: 'Readwrite', range: Range.prefix(keys.agentsPrefix(cluster)) });
  if (!users.has(AGENT_USER)) await etcd.user(AGENT_USER).create(randomBytes(24).toString('base64')).catch(ignoreExists);
  await etcd.user(AGENT_USER).addRole(AGENT_ROLE);
  await etcd.auth.authEnable();
}

/** The etcd users of connected peers, made to match `peers` exactly; each may also read its own renewals. */
export async function syncPeerUsers(etcd: Etcd3, cluster: string, peers: string[]): Promise<void> {
  const want = new Map(peers.map((p) => [remoteUser(p), p]));
  const have = (await etcd.getUsers()).map((u) => u.name).filter((n) => n.startsWith('remote-'));
  for (const [name, peer] of want) {
    if (!have.includes(name)) await etcd.user(name).create(randomBytes(24).toString('base64')).catch(ignoreExists);
    await etcd.user(name).addRole(READ_EXPORT_ROLE);
    const credRole = `skein-credential-${peer}`;
    await etcd.role(credRole).create().catch(ignoreExists);
    await etcd.role(credRole).grant({ permission: 'Read', range: new Range(`${ROOT}/credentials/${cluster}/${peer}`) });
    await etcd.user(name).addRole(credRole);
  }
  for (const name of have) {
    if (want.has(name)) continue;
    await etcd.user(name).delete();
    await etcd.role(`skein-credential-${name.slice('remote-'.length)}`).delete().catch(() => {});
  }
}
