// The test bed's state file: what `up` made, so `down`, `exec` and tests find it. Validated on read.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { ClusterId, ClusterName } from '../mesh/schema/cluster.js';

export const ClusterState = z.object({
  name: ClusterName,
  id: ClusterId,
  nodes: z.number().int().min(1),
  apiserverUrl: z.string().url(),
  kubeEtcdUrl: z.string().url(),
  meshEtcdUrl: z.string().url(),
  /** Each node's skein-agent HTTP address, by node index - 1. */
  agents: z.array(z.string().url()).default([]),
});
export type ClusterState = z.infer<typeof ClusterState>;

export const TestbedState = z.object({
  version: z.literal(1),
  tag: z.string(),
  phase: z.enum(['starting', 'up']),
  /** How nodes run pods: the node runner (host processes), or the real kubelet + containerd + runc. */
  runtime: z.enum(['node-runner', 'kubelet']).default('node-runner'),
  /** Host mounts `up` made shared (the kubelet's HostToContainer mounts need it); `down` makes them private again. */
  madeShared: z.array(z.string()).default([]),
  kubeVersion: z.string(),
  cgroupRoot: z.string(),
  clusters: z.array(ClusterState),
  createdAt: z.string(),
});
export type TestbedState = z.infer<typeof TestbedState>;

export function defaultStateDir(): string {
  return process.env.SKEIN_STATE_DIR ?? join(homedir(), '.local', 'share', 'skein', 'local');
}

export const statePaths = (stateDir: string) => {
  const dir = resolve(stateDir);
  return {
    dir,
    stateFile: join(dir, 'state.json'),
    kubeconfig: join(dir, 'kubeconfig'),
    bin: join(dir, 'bin'),
    cluster: (name: string) => join(dir, 'clusters', name),
    /** Logs outlive `down` (so a failed `up` can be read) and are cleared by the next `up`. */
    logs: (name: string) => join(dir, 'logs', name),
  };
};

export function readState(stateDir: string): TestbedState | undefined {
  const file = statePaths(stateDir).stateFile;
  if (!existsSync(file)) return undefined;
  const parsed = TestbedState.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) {
    throw new Error(`${file} is not a valid test bed state (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}); run "skein local down --state-dir ${stateDir}" to clear it`);
  }
  return parsed.data;
}

/** Defaults are filled here, so a caller may leave them out. */
export function writeState(stateDir: string, state: z.input<typeof TestbedState>): void {
  const file = statePaths(stateDir).stateFile;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(TestbedState.parse(state), null, 2));
  renameSync(`${file}.tmp`, file);
}
