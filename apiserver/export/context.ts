// What every export unit is handed: the cluster it exports, the writer its keys go through (minimal etcd
// writes, pruned after the initial sync), the process's metrics and its log.

import type { StateWriter } from '../../mesh/state-writer.js';
import type { Metrics } from '../metrics.js';
import type { KubeObject } from '../../mesh/kube/objects.js';

export interface ExportLog {
  info: (obj: object, msg: string) => void;
  warn: (obj: object, msg: string) => void;
}

export interface ExportContext {
  cluster: string;
  writer: StateWriter;
  metrics: Metrics;
  log: ExportLog;
}

/** `namespace/name`, as the units key objects and log them. */
export const nsName = (o: KubeObject) => `${o.metadata?.namespace}/${o.metadata?.name}`;
