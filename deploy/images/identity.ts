// Who answered: every echo reply carries it so a client (and the failover drill) can count by cluster.
import { z } from 'zod';

export const EchoIdentity = z.object({
  pod: z.string(),
  namespace: z.string(),
  node: z.string(),
  cluster: z.string(),
  ip: z.string(),
});
export type EchoIdentity = z.infer<typeof EchoIdentity>;

export function identityFromEnv(env: NodeJS.ProcessEnv = process.env): EchoIdentity {
  return {
    pod: env.POD_NAME ?? 'unknown',
    namespace: env.POD_NAMESPACE ?? 'default',
    node: env.NODE_NAME ?? 'unknown',
    cluster: env.CLUSTER_NAME ?? 'unknown',
    ip: env.POD_IP ?? '',
  };
}
