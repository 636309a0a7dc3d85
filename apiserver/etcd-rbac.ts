// Idempotent etcd RBAC steps that write only what is missing. Every auth write bumps etcd's auth revision
// and fails requests authenticated just before it ("revision of auth store is old"), so a reconcile that
// re-granted everything on every pass would keep failing the very writers it serves.
import { randomBytes } from 'node:crypto';
import { EtcdRoleExistsError, EtcdRoleNotFoundError, EtcdUserExistsError, EtcdUserNotFoundError, type Etcd3, type IPermissionResult } from 'etcd3';

/** A grant of a key range (a single key is the range [key, key+\0)). */
export type Grant = IPermissionResult;

const sameGrant = (a: Grant, b: Grant) => a.permission === b.permission && a.range.start.equals(b.range.start) && a.range.end.equals(b.range.end);

function ignore(...types: (new (...a: never[]) => Error)[]): (err: unknown) => void {
  return (err) => {
    if (!types.some((t) => err instanceof t)) throw err;
  };
}

export async function ensureRole(etcd: Etcd3, role: string, grants: Grant[]): Promise<void> {
  const have = await etcd.role(role).permissions().catch((err: unknown) => {
    if (err instanceof EtcdRoleNotFoundError) return undefined;
    throw err;
  });
  if (!have) await etcd.role(role).create().catch(ignore(EtcdRoleExistsError));
  const missing = grants.filter((g) => !(have ?? []).some((h) => sameGrant(h, g)));
  if (missing.length) await etcd.role(role).grant(missing);
}

/** The user exists and holds `roles` (others it holds are left alone). Passwords are never used: certificates are. */
export async function ensureUser(etcd: Etcd3, user: string, roles: string[]): Promise<void> {
  let held = await etcd
    .user(user)
    .roles()
    .then((r) => r.map((x) => x.name))
    .catch((err: unknown) => {
      if (err instanceof EtcdUserNotFoundError) return undefined;
      throw err;
    });
  if (!held) {
    await etcd.user(user).create(randomBytes(24).toString('base64')).catch(ignore(EtcdUserExistsError));
    held = [];
  }
  for (const role of roles) if (!held.includes(role)) await etcd.user(user).addRole(role);
}

export async function removeUser(etcd: Etcd3, user: string): Promise<void> {
  await etcd.user(user).delete().catch(ignore(EtcdUserNotFoundError));
}

export async function removeRole(etcd: Etcd3, role: string): Promise<void> {
  await etcd.role(role).delete().catch(ignore(EtcdRoleNotFoundError));
}
