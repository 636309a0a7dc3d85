// Network namespaces, veth pairs and routes through iproute2: the test bed's nodes and pods.
import { run, runQuiet } from './run.js';

export async function listNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  return out.split('\n').map((l) => l.split(' ')[0] ?? '').filter(Boolean);
}

export async function addNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  await inNetns(name, 'ip', ['link', 'set', 'lo', 'up']);
}

export async function deleteNetns(name: string): Promise<boolean> {
  return runQuiet('ip', ['netns', 'delete', name]);
}

export function inNetns(ns: string, cmd: string, args: string[]): Promise<string> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args]);
}

/** `ip` in a namespace (undefined: the root namespace). `ip -n` avoids a fork of `ip netns exec`. */
export function ip(ns: string | undefined, ...args: string[]): Promise<string> {
  return run('ip', ns ? ['-n', ns, ...args] : args);
}

export async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await inNetns(ns, 'sysctl', ['-qw', `${key}=${value}`]);
}

/**
 * A veth pair from namespace `a` (undefined: root) to namespace `b`, addressed on both ends.
 * The b end is renamed to `bName` after it moves (names need only be unique inside a namespace).
 */
export async function addVethPair(opts: {
  aNs: string | undefined;
  aName: string;
  aAddr?: string;
  bNs: string;
  bName: string;
  bAddr?: string;
  /** A fixed MAC for the b end (pods: derived from the IP, so a reused IP keeps valid neighbor entries). */
  bMac?: string;
  tmpName: string;
}): Promise<void> {
  await ip(opts.aNs, 'link', 'add', opts.aName, 'type', 'veth', 'peer', 'name', opts.tmpName);
  await ip(opts.aNs, 'link', 'set', opts.tmpName, 'netns', opts.bNs);
  if (opts.tmpName !== opts.bName) await ip(opts.bNs, 'link', 'set', opts.tmpName, 'name', opts.bName);
  if (opts.bMac) await ip(opts.bNs, 'link', 'set', opts.bName, 'address', opts.bMac);
  if (opts.aAddr) await ip(opts.aNs, 'addr', 'add', opts.aAddr, 'dev', opts.aName);
  if (opts.bAddr) await ip(opts.bNs, 'addr', 'add', opts.bAddr, 'dev', opts.bName);
  await ip(opts.aNs, 'link', 'set', opts.aName, 'up');
  await ip(opts.bNs, 'link', 'set', opts.bName, 'up');
}
