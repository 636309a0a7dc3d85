// The status JSON of /v1/status (what `skein status` and `skein connect` read).
import type { RemoteStatus } from '../sync/remote-sync.js';
import type { ExportStatus } from './export/exporter.js';
import type { Etcd3 } from 'etcd3';
import { keys } from './schema/keys.js';
import { AgentView } from './schema/values.js';

export interface ApiserverStatus extends ExportStatus {
  meshEndpoint: string;
  trustDomain?: string;
  /** This process's own mesh etcd identity: when it expires, how often it was renewed. */
  meshIdentity?: { expires: string; rotations: number };
  remotes: RemoteStatus[];
  /** Link updates refused because they claim a trust domain the peer may not (the link keeps its last good state). */
  refusedLinks?: { cluster: string; reason: string }[];
  /** Each node agent's published view of what it has programmed (nodes whose agent is down are absent). */
  agents: AgentView[];
}

/** The node agents' published views, validated; an unreadable one is left out rather than failing status. */
export async function agentViews(etcd: Etcd3, cluster: string): Promise<AgentView[]> {
  const raw = await etcd.getAll().prefix(keys.agentsPrefix(cluster)).strings();
  return Object.values(raw)
    .flatMap((v) => {
      try {
        const parsed = AgentView.safeParse(JSON.parse(v));
        return parsed.success ? [parsed.data] : [];
      } catch {
        return [];
      }
    })
    .sort((a, b) => a.node.localeCompare(b.node));
}
