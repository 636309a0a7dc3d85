// Whether the agent stops because Skein is being uninstalled rather than upgraded or restarted: only then does
// it take its datapath away (an upgraded agent must find the pinned programs and maps to adopt them). `helm
// uninstall` deletes the agent DaemonSet, then its RBAC and service account, before the pods stop; an upgrade
// or a restart keeps the DaemonSet. Anything unclear (the API unreachable) counts as staying: programs left
// attached keep traffic flowing, programs taken away by mistake would stop it.
import type { V1DaemonSet } from '@kubernetes/client-node';
import type { Pod } from '../../mesh/kube/objects.js';
import { isNotFound, KubeApiError, type KubeRest } from '../../mesh/kube/rest.js';
import { podPath } from '../../mesh/kube/names.js';

/** The DaemonSet that controls this agent's pod, or undefined when it runs outside one (the test bed's node runner). */
export async function ownDaemonSet(rest: Pick<KubeRest, 'get'>, namespace: string, pod: string): Promise<string | undefined> {
  const p = await rest.get<Pod>(podPath(namespace, pod));
  return p.metadata?.ownerReferences?.find((o) => o.kind === 'DaemonSet' && o.controller)?.name;
}

export async function beingUninstalled(rest: Pick<KubeRest, 'get'>, namespace: string, daemonSet: string): Promise<boolean> {
  try {
    const ds = await rest.get<V1DaemonSet>(`/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(daemonSet)}`);
    return Boolean(ds.metadata?.deletionTimestamp);
  } catch (err) {
    if (isNotFound(err)) return true;
    // Its service account (401) or role (403) removed: the uninstall got there first.
    return err instanceof KubeApiError && (err.status === 401 || err.status === 403);
  }
}
