import { readFileSync } from 'node:fs';
import { z } from 'zod';

export const NodeRunnerConfig = z.object({
  tag: z.string(),
  cluster: z.string(),
  clusterId: z.number().int(),
  zone: z.string(),
  kubeconfig: z.string(),
  /** Absolute path of this node's cgroup. */
  cgroup: z.string(),
  logDir: z.string(),
  node: z.object({
    name: z.string(),
    index: z.number().int(),
    netns: z.string(),
    podCidr: z.string(),
    gateway: z.string(),
    nodeIp: z.string(),
    fabricIp: z.string(),
    fabricLink: z.string(),
    cgroup: z.string(),
  }),
});
export type NodeRunnerConfig = z.infer<typeof NodeRunnerConfig>;

export function loadConfig(file: string): NodeRunnerConfig {
  const parsed = NodeRunnerConfig.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new Error(`${file}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}
