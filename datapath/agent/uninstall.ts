// Whether a stopping agent takes its datapath with it. Stopping normally leaves the pinned programs, maps and
// routes in place: an upgraded or restarted agent adopts them and traffic never stops; a crash or kill -9 runs
// no code at all. Only when Skein is uninstalled (its agent DaemonSet deleted: `helm uninstall`, `kubectl
// delete`) does the agent detach its programs and remove its pins and routes.
//
// The agent follows its DaemonSet with a watch from the start instead of looking it up at SIGTERM: `helm
// uninstall` deletes the DaemonSet and, in the same pass, the agent's RBAC and service account, so by the time
// the kubelet stops the pod a lookup is refused (401/403) and tells nothing. A watch opened earlier was
// authorized when it opened and still delivers the deletion. Anything unclear counts as staying: programs
// left attached keep traffic flowing, programs taken away by mistake would stop it.
import type { KubeConfig, V1DaemonSet } from '@kubernetes/client-node';
import { rmdirSync } from 'node:fs';
import { dirname, relative } from 'node:path';
import type { Logger } from 'pino';
import { startInformer, type RunningInformer } from '../../mesh/kube/informer.js';
import type { Wire } from '../../mesh/kube/objects.js';
import { isNotFound, KubeApiError, type KubeRest } from '../../mesh/kube/rest.js';
import { waitAtMost } from '../../mesh/wait-at-most.js';

type DaemonSet = Wire<V1DaemonSet>;

/** What the watch last showed of the agent's DaemonSet. */
export type DaemonSetSeen = 'never' | 'present' | 'deleting' | 'deleted';

/** A lookup of the DaemonSet at shutdown, when the watch showed it present. */
export type DaemonSetLook = 'present' | 'deleting' | 'not-found' | { unclear: string };

export interface Verdict {
  uninstall: boolean;
  reason: string;
}

/** The state after one watch event: a deletion, a deletion under way (foreground cascade), or present again. */
export function afterEvent(type: 'add' | 'update' | 'delete', ds: DaemonSet): DaemonSetSeen {
  if (type === 'delete') return 'deleted';
  return ds.metadata?.deletionTimestamp ? 'deleting' : 'present';
}

/** The decision, from the watch and (only when the watch showed the DaemonSet present) a lookup at shutdown. */
export function shutdownVerdict(seen: DaemonSetSeen, look?: DaemonSetLook): Verdict {
  if (seen === 'deleted') return { uninstall: true, reason: 'the agent DaemonSet was deleted' };
  if (seen === 'deleting') return { uninstall: true, reason: 'the agent DaemonSet is being deleted' };
  // A DaemonSet never seen (a wrong --daemonset, or not allowed to read it): a 404 would say nothing.
  if (seen === 'never') return { uninstall: false, reason: 'the agent DaemonSet was never seen: the datapath stays' };
  if (look === 'not-found') return { uninstall: true, reason: 'the agent DaemonSet is gone' };
  if (look === 'deleting') return { uninstall: true, reason: 'the agent DaemonSet is being deleted' };
  if (look === 'present') return { uninstall: false, reason: 'the agent DaemonSet stays (upgrade, restart, eviction): the next agent adopts the datapath' };
  return { uninstall: false, reason: `the agent DaemonSet could not be read (${look?.unclear ?? 'not looked up'}): the datapath stays` };
}

export const daemonSetPath = (namespace: string, name: string) => `/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/daemonsets/${encodeURIComponent(name)}`;

/** One bounded GET of the DaemonSet; every failure but a 404 is unclear (a refused token or role included). */
export async function lookAtDaemonSet(rest: Pick<KubeRest, 'get'>, path: string, timeoutMs: number): Promise<DaemonSetLook> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<DaemonSetLook>((resolve) => (timer = setTimeout(() => resolve({ unclear: `no answer in ${timeoutMs} ms` }), timeoutMs)));
  const lookup = rest.get<V1DaemonSet>(path).then(
    (ds): DaemonSetLook => (ds.metadata?.deletionTimestamp ? 'deleting' : 'present'),
    (err: unknown): DaemonSetLook => (isNotFound(err) ? 'not-found' : { unclear: err instanceof KubeApiError ? `${err.status} ${err.reason}` : (err as Error).message }),
  );
  try {
    return await Promise.race([lookup, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Follows the agent's own DaemonSet (`--daemonset NAMESPACE/NAME`) from start to shutdown. */
export class UninstallWatch {
  private seen: DaemonSetSeen = 'never';
  private informer?: RunningInformer<DaemonSet>;
  private readonly path: string;

  constructor(private readonly o: { kc: KubeConfig; rest: Pick<KubeRest, 'get' | 'list'>; namespace: string; name: string; log: Logger }) {
    this.path = daemonSetPath(o.namespace, o.name);
  }

  start(): void {
    const collection = `/apis/apps/v1/namespaces/${encodeURIComponent(this.o.namespace)}/daemonsets`;
    // Only this one object: the role grants list and watch on it by name (resourceNames + this selector).
    const fieldSelector = `metadata.name=${this.o.name}`;
    this.informer = startInformer<DaemonSet>({
      kc: this.o.kc,
      path: collection,
      fieldSelector,
      list: () => this.o.rest.list(`${collection}?fieldSelector=${encodeURIComponent(fieldSelector)}`),
      onEvent: (type, ds) => {
        const next = afterEvent(type, ds);
        if (next !== this.seen && next !== 'present') this.o.log.info({ daemonSet: this.path, seen: next }, 'agent DaemonSet deleted: Skein is being uninstalled');
        this.seen = next;
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'agent DaemonSet watch restarting'),
    });
    void this.informer.synced.then(() => {
      if (this.seen === 'never') this.o.log.warn({ daemonSet: this.path }, 'the agent DaemonSet does not exist: an uninstall will leave this node\'s datapath attached (check --daemonset)');
    });
  }

  /** The decision at shutdown: from the watch, or (it showed the DaemonSet present) one bounded lookup. */
  async verdict(timeoutMs: number): Promise<Verdict> {
    await waitAtMost(this.informer?.stop(), timeoutMs);
    const look = this.seen === 'present' ? await lookAtDaemonSet(this.o.rest, this.path, timeoutMs) : undefined;
    return shutdownVerdict(this.seen, look);
  }
}

/** Removes `dir`'s empty parents up to (not including) `root`: what a per-node pin directory leaves. */
export function removeEmptyParents(dir: string, root: string): void {
  for (let d = dirname(dir); relative(root, d) !== '' && !relative(root, d).startsWith('..'); d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch {
      return; // not empty (another node's, another release's) or gone
    }
  }
}
