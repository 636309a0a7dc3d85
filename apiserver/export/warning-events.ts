// Warning Events on the Kubernetes object a problem is about: what `kubectl describe` shows its owner.

import type { KubeRest } from '../../mesh/kube/rest.js';
import type { ExportLog } from './context.js';
import type { KubeObject } from '../../mesh/kube/objects.js';

export class WarningEvents {
  constructor(
    private readonly rest: Pick<KubeRest, 'post'>,
    /** The Events' reportingInstance. */
    private readonly cluster: string,
    private readonly log: ExportLog,
  ) {}

  /** Fire and forget: a failure is only logged (an Event is a courtesy, the export goes on without it). */
  post(kind: 'Service' | 'Pod', obj: KubeObject, reason: string, message: string): void {
    const now = new Date().toISOString();
    const ns = obj.metadata!.namespace!;
    void this.rest
      .post(`/api/v1/namespaces/${ns}/events`, {
        metadata: { generateName: `${obj.metadata!.name}.skein-`, namespace: ns },
        involvedObject: { kind, apiVersion: 'v1', namespace: ns, name: obj.metadata!.name, uid: obj.metadata!.uid, resourceVersion: obj.metadata!.resourceVersion },
        reason,
        message,
        type: 'Warning',
        source: { component: 'skein-apiserver' },
        reportingComponent: 'skein-apiserver',
        reportingInstance: this.cluster,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      })
      .catch((err: Error) => this.log.warn({ err: err.message, reason }, 'could not record the Event'));
  }
}
