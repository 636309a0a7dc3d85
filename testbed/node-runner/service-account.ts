// Service-account credentials for a pod, as the kubelet provides them: a token bound to the pod from the
// TokenRequest API, the cluster CA and the namespace, in files that each container sees at the standard
// path through a bind mount in its own mount namespace (so client libraries' in-cluster config just works).
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { KubeRest } from '../../mesh/kube/rest.js';
import type { Pod } from '../../mesh/kube/objects.js';

export const SA_MOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';
const TOKEN_SECONDS = 3600;

export async function writeServiceAccount(rest: KubeRest, pod: Pod, dir: string, caFile: string): Promise<void> {
  const ns = pod.metadata!.namespace!;
  const sa = pod.spec?.serviceAccountName ?? 'default';
  const res = await rest.post<{ status: { token: string } }>(`/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: TOKEN_SECONDS, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name, uid: pod.metadata!.uid } },
  });
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'token.tmp'), res.status.token, { mode: 0o600 });
  renameSync(join(dir, 'token.tmp'), join(dir, 'token'));
  copyFileSync(caFile, join(dir, 'ca.crt'));
  writeFileSync(join(dir, 'namespace'), ns);
}

/** Refresh well before expiry, as the kubelet does at 80% of the lifetime. */
export const TOKEN_REFRESH_MS = TOKEN_SECONDS * 800;

/** argv prefix that runs the rest in a private mount namespace with the pod's credentials mounted. */
export function withServiceAccountMount(dir: string): string[] {
  return ['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', `mount --bind "$0" ${SA_MOUNT} && exec "$@"`, dir];
}
