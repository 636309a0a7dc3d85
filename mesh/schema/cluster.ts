// Cluster identity: the name and numeric ID every cluster in a mesh must hold uniquely. Cilium-compatible
// rules, so a ClusterMesh's names and IDs carry over.
import { z } from 'zod';

const CLUSTER_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

export const ClusterName = z
  .string()
  .regex(CLUSTER_NAME_RE, 'cluster name must be 1-32 lowercase letters, digits or "-", starting and ending with a letter or digit (e.g. "east")');

export const ClusterId = z
  .number()
  .int('cluster ID must be a whole number')
  .min(1, 'cluster ID must be between 1 and 255')
  .max(255, 'cluster ID must be between 1 and 255');

/** Parses `name:id` as `skein local up --clusters` takes it. */
export function parseClusterRef(text: string): { name: string; id: number } {
  const m = /^([^:]+):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`cluster "${text}": expected NAME:ID, for example east:1`);
  const name = ClusterName.safeParse(m[1]);
  if (!name.success) throw new Error(`cluster "${text}": ${name.error.issues[0]?.message}`);
  const id = ClusterId.safeParse(Number(m[2]));
  if (!id.success) throw new Error(`cluster "${text}": ${id.error.issues[0]?.message}`);
  return { name: name.data, id: id.data };
}
