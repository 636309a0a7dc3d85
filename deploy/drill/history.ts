// Keeps the last drills of a cluster where its dashboard reads them (mesh/drill-report.ts DRILL_HISTORY):
// a ConfigMap in skein-system, newest first, bounded in count and bytes. Written by the drill CLI with the
// user's credentials; skein-apiserver only reads it.
import { DRILL_HISTORY, DrillHistory, type DrillReport } from '../../mesh/drill-report.js';
import { isConflict, isNotFound, type KubeRest } from '../../mesh/kube/rest.js';
import { decodeJson } from '../../mesh/schema/values.js';
import { SKEIN_NAMESPACE } from '../../mesh/service-ref.js';

const PATH = `/api/v1/namespaces/${SKEIN_NAMESPACE}/configmaps`;

/** The history with `r` added first: at most maxDrills, dropping the oldest until it fits maxBytes. */
export function withDrill(history: readonly DrillReport[], r: DrillReport): DrillReport[] {
  const kept = [r, ...history].slice(0, DRILL_HISTORY.maxDrills);
  while (kept.length > 1 && Buffer.byteLength(JSON.stringify(kept)) > DRILL_HISTORY.maxBytes) kept.pop();
  return kept;
}

/** Adds a drill to the cluster's history (read, add, write with the read's resourceVersion; retried on a conflict). */
export async function keepDrill(rest: KubeRest, r: DrillReport): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    let cm: { metadata: { resourceVersion?: string }; data?: Record<string, string> } | undefined;
    try {
      cm = await rest.get(`${PATH}/${DRILL_HISTORY.configMap}`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const text = cm?.data?.[DRILL_HISTORY.key];
    // An unreadable history (another version's, or edited by hand) is started afresh rather than blocking the drill.
    const history = (text && decodeJson(DrillHistory, text)) || [];
    const body = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: DRILL_HISTORY.configMap, namespace: SKEIN_NAMESPACE, labels: { 'app.kubernetes.io/part-of': 'skein' }, ...(cm ? { resourceVersion: cm.metadata.resourceVersion } : {}) },
      data: { [DRILL_HISTORY.key]: JSON.stringify(withDrill(history, r)) },
    };
    try {
      await (cm ? rest.put(`${PATH}/${DRILL_HISTORY.configMap}`, body) : rest.post(PATH, body));
      return;
    } catch (err) {
      if (!isConflict(err) || attempt >= 4) throw err;
    }
  }
}
