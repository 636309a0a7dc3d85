// cgroup v2 for the test bed: every process `skein local up` starts lives below one cgroup per state dir, so
// `down` can kill all of it with cgroup.kill even after `up` itself crashed, and the node cgroups are where
// the datapath's BPF socket programs attach.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './run.js';

const FALLBACK_MOUNT = '/run/skein/cgroup2';

/** Where cgroup2 is mounted (unified or hybrid hierarchy); mounts one if there is none. */
export async function cgroup2Root(): Promise<string> {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) return mountPoint;
  }
  mkdirSync(FALLBACK_MOUNT, { recursive: true });
  await run('mount', ['-t', 'cgroup2', 'none', FALLBACK_MOUNT]);
  return FALLBACK_MOUNT;
}

export function ensureCgroup(path: string): string {
  mkdirSync(path, { recursive: true });
  return path;
}

/** Kills every process in the cgroup and its descendants, waits until they are gone, removes the tree. */
export async function destroyCgroup(path: string, timeoutMs = 10_000): Promise<void> {
  if (!existsSync(path)) return;
  writeFileSync(join(path, 'cgroup.kill'), '1');
  const deadline = Date.now() + timeoutMs;
  while (!isEmpty(path)) {
    if (Date.now() > deadline) throw new Error(`cgroup ${path} still has processes ${timeoutMs} ms after cgroup.kill`);
    await new Promise((r) => setTimeout(r, 20));
  }
  removeTree(path);
}

function isEmpty(path: string): boolean {
  const events = readFileSync(join(path, 'cgroup.events'), 'utf8');
  return /^populated 0$/m.test(events);
}

function removeTree(path: string): void {
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) removeTree(join(path, entry.name));
  }
  rmdirSync(path);
}

export function cgroupPids(path: string): number[] {
  if (!existsSync(path)) return [];
  const pids = readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) pids.push(...cgroupPids(join(path, entry.name)));
  }
  return pids;
}

/** The cgroup v2 path (relative to the hierarchy root) a process belongs to. */
export function cgroupOfPid(pid: number): string | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
    return line?.slice(3);
  } catch {
    return undefined;
  }
}

/** Resident memory of every process in the cgroup tree (no memory controller needed). */
export function cgroupRssBytes(path: string): number {
  let total = 0;
  for (const pid of cgroupPids(path)) {
    try {
      const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      total += m ? Number(m[1]) * 1024 : 0;
    } catch {
      /* exited meanwhile */
    }
  }
  return total;
}
