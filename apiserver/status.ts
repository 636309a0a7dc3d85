// The status JSON of /v1/status (what `skein status` and `skein connect` read).
import type { RemoteStatus } from '../sync/remote-sync.js';
import type { ExportStatus } from './export/exporter.js';

export interface ApiserverStatus extends ExportStatus {
  meshEndpoint: string;
  trustDomain?: string;
  /** This process's own mesh etcd identity: when it expires, how often it was renewed. */
  meshIdentity?: { expires: string; rotations: number };
  remotes: RemoteStatus[];
}
