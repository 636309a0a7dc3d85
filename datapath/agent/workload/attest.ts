// Workload attestation from a caller's cgroup: a pod's processes live in its pod cgroup, which the kubelet (or
// the test bed's node runner) makes directly under the node's pod cgroup parent, named after the pod UID:
//   cgroupfs  /kubepods/pod<uid>/…, /kubepods/{burstable,besteffort}/pod<uid>/…
//   systemd   /kubepods.slice/kubepods-pod<uid_>.slice/…, …/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/…
//   test bed  <node cgroup>/pod-<uid>/…
// Only that exact place counts: a UID anywhere else in the path (a cgroup anyone with cgroup rights made,
// /evil/pod<victim uid>, or a sub-cgroup of another pod) is not a pod. Only the cgroup v2 line is read;
// the pod must still be one the Kubernetes API binds to this node (identity-source.ts).
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';

const uidPattern = (sep: string) => ['{8}', '{4}', '{4}', '{4}', '{12}'].map((n) => `[0-9a-f]${n}`).join(sep);
const UID = uidPattern('-');
const UID_UNDERSCORED = uidPattern('_');
const POD_DIR = new RegExp(`^pod-?(${UID})$`);
const QOS = new Set(['burstable', 'besteffort']);
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The pod UID of the pod cgroup `segment` directly under a parent named `parentName`, if it is one. */
function podUidOfChild(parentName: string, segment: string): string | undefined {
  if (parentName.endsWith('.slice')) {
    // systemd: children of a-b.slice are a-b-<name>.slice; the pod's is <prefix>-pod<uid with _>.slice.
    const prefix = parentName.slice(0, -'.slice'.length);
    const m = new RegExp(`^${escapeRegExp(prefix)}-pod(${UID_UNDERSCORED})\\.slice$`).exec(segment);
    return m?.[1]!.replace(/_/g, '-');
  }
  return POD_DIR.exec(segment)?.[1];
}

/** The QoS level cgroup directly under a kubelet's kubepods parent, if `segment` is one. */
function isQosLevel(parentName: string, segment: string): boolean {
  if (parentName === 'kubepods') return QOS.has(segment);
  if (parentName === 'kubepods.slice') return [...QOS].some((q) => segment === `kubepods-${q}.slice`);
  return false;
}

/** The pod UID of a cgroup v2 path, if it is exactly a pod cgroup (or below one) under one of `parents`. */
export function podUidOfCgroupPath(path: string, parents: readonly string[]): string | undefined {
  for (const parent of parents) {
    const base = parent === '/' ? '' : parent;
    if (!path.startsWith(`${base}/`)) continue;
    const segments = path.slice(base.length + 1).split('/');
    const parentName = posix.basename(parent);
    const direct = podUidOfChild(parentName, segments[0]!);
    if (direct) return direct;
    const underQos = segments.length > 1 && isQosLevel(parentName, segments[0]!) ? podUidOfChild(segments[0]!, segments[1]!) : undefined;
    if (underQos) return underQos;
  }
  return undefined;
}

/**
 * The pod UID in a /proc/<pid>/cgroup text (its cgroup v2 line), or undefined for a process in no pod. The
 * kernel prints cgroup paths unescaped and refuses names with a newline, so there is one v2 line; a text
 * with more (a forged line would come first on hybrid hosts, from a v1 hierarchy) is trusted for nothing.
 */
export function podUidFromCgroup(text: string, parents: readonly string[]): string | undefined {
  const unified = text.split('\n').filter((l) => l.startsWith('0::'));
  return unified.length === 1 ? podUidOfCgroupPath(unified[0]!.slice(3), parents) : undefined;
}

export function podUidOfPid(pid: number, parents: readonly string[]): string | undefined {
  try {
    return podUidFromCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), parents);
  } catch {
    return undefined; // the process is gone
  }
}

/**
 * A --pod-cgroup-parent value as /proc/<pid>/cgroup names it: a cgroup path (/kubepods) as is, a directory
 * under the cgroup2 mount (/sys/fs/cgroup/kubepods) translated. `mountinfo` is /proc/self/mountinfo's text.
 */
export function podCgroupParent(value: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string {
  if (!value.startsWith('/')) throw new Error(`--pod-cgroup-parent ${value}: must be an absolute path`);
  const normalized = posix.normalize(value).replace(/(.)\/+$/, '$1');
  if (normalized !== value.replace(/(.)\/+$/, '$1')) throw new Error(`--pod-cgroup-parent ${value}: must be a plain path (no ., .. or //)`);
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mountpoint options [optional…] - fstype source superoptions
    const [fields, after] = line.split(' - ');
    if (after?.split(' ')[0] !== 'cgroup2') continue;
    const [, , , root, mountPoint] = fields!.split(' ');
    if (!root || !mountPoint) continue;
    if (normalized === mountPoint) return root;
    if (normalized.startsWith(`${mountPoint}/`)) return posix.join(root, normalized.slice(mountPoint.length));
  }
  return normalized;
}
