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
  /** Per-pod files (service-account tokens), like the kubelet's pods dir. */
  podsDir: z.string(),
  /** The cluster CA, handed to pods as ca.crt. */
  caFile: z.string(),
  /** kube-apiserver as pods reach it: injected as KUBERNETES_SERVICE_HOST/PORT. */
  apiserver: z.object({ host: z.string(), port: z.number().int() }),
  /** Where this node's kubelet API listens (the host's fabric address) and its TLS pair. */
  kubeletApi: z.object({ host: z.string(), certFile: z.string(), keyFile: z.string() }),
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
