// Starts long-running processes inside a cgroup from their first instruction (a shell writes itself into
// cgroup.procs, then execs), detached, with output to a log file. Nothing `up` starts escapes `down`.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface DaemonSpec {
  cgroup: string;
  logFile: string;
  argv: string[];
  env?: Record<string, string>;
  netns?: string;
}

export function spawnDaemon(spec: DaemonSpec): number {
  mkdirSync(dirname(spec.logFile), { recursive: true });
  mkdirSync(spec.cgroup, { recursive: true });
  const argv = spec.netns ? ['ip', 'netns', 'exec', spec.netns, ...spec.argv] : spec.argv;
  const log = openSync(spec.logFile, 'a');
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(spec.cgroup, 'cgroup.procs'), ...argv], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...process.env, ...spec.env },
  });
  closeSync(log);
  child.unref();
  if (child.pid === undefined) throw new Error(`could not start ${argv[0]}`);
  return child.pid;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, hint = ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (let delay = 25; ; delay = Math.min(delay * 2, 500)) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const why = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}${hint ? ` (${hint})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}
