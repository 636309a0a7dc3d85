// Workload attestation from a caller's pid: its cgroup names its pod (kubelet cgroup paths carry the pod UID:
// .../pod<uid>/... with cgroupfs, ...-pod<uid_with_underscores>.slice/... with systemd, and the test bed's
// .../pod-<uid>/...). The pod must be one the Kubernetes API binds to this node.
import { readFileSync } from 'node:fs';

const POD_UID = /pod-?([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})/;

/** The pod UID in a /proc/<pid>/cgroup text, or undefined for a process outside any pod. */
export function podUidFromCgroup(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const path = line.split(':').slice(2).join(':');
    const m = POD_UID.exec(path);
    if (m) return m[1]!.replace(/_/g, '-');
  }
  return undefined;
}

export function podUidOfPid(pid: number): string | undefined {
  try {
    return podUidFromCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
  } catch {
    return undefined; // the process is gone
  }
}
