// The last drills of this cluster, as `skein drill` keeps them (mesh/drill-report.ts DRILL_HISTORY: a
// ConfigMap in skein-system). Read only, through the Kubernetes API; cached briefly so a room full of
// dashboards is one read every few seconds.
import { DRILL_HISTORY, DrillHistory, type DrillReport } from '../../mesh/drill-report.js';
import { isNotFound, type KubeRest } from '../../mesh/kube/rest.js';
import { decodeJson } from '../../mesh/schema/values.js';
import { SKEIN_NAMESPACE } from '../../mesh/service-ref.js';

const CACHE_MS = 2_000;

export class DrillHistoryReader {
  private cached?: { at: number; drills: Promise<DrillReport[]> };

  constructor(private readonly rest: Pick<KubeRest, 'get'>) {}

  /** Newest first; none when no drill was kept yet. An unreadable history reads as none, never as an error page. */
  drills(): Promise<DrillReport[]> {
    if (this.cached && Date.now() - this.cached.at < CACHE_MS) return this.cached.drills;
    const drills = this.read();
    this.cached = { at: Date.now(), drills };
    return drills;
  }

  private async read(): Promise<DrillReport[]> {
    try {
      const cm = await this.rest.get<{ data?: Record<string, string> }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/configmaps/${DRILL_HISTORY.configMap}`);
      const text = cm.data?.[DRILL_HISTORY.key];
      return (text && decodeJson(DrillHistory, text)) || [];
    } catch (err) {
      if (isNotFound(err)) return [];
      this.cached = undefined; // retried on the next request, not cached as empty
      throw err;
    }
  }
}
