// Services and their EndpointSlices → one GlobalService value per service. A global one (annotation) goes
// to the export prefix peers read; any other service with a ClusterIP to the local-only prefix, so this
// cluster's agents still serve it with its local backends. Each event recomputes only its own service.

import { keys } from '../../mesh/schema/keys.js';
import { encodeValue, GlobalService } from '../../mesh/schema/values.js';
import { parseGlobalAnnotations, type GlobalSpec } from '../../mesh/schema/annotations.js';
import type { ExportStatus } from '../../mesh/status.js';
import { nsName, type ExportContext } from './context.js';
import { globalServiceValue } from './service-model.js';
import type { WarningEvents } from './warning-events.js';
import type { EndpointSlice, Service } from '../../mesh/kube/objects.js';

export class ServiceExport {
  private readonly services = new Map<string, Service>();
  /** Per service (`namespace/name`): its slices by name. */
  private readonly slices = new Map<string, Map<string, EndpointSlice>>();
  private readonly exported = new Map<string, GlobalService>();
  /** Bad annotation values already reported (uid/annotation/value): one Event each, not one per resync. */
  private readonly reportedAnnotations = new Set<string>();

  constructor(private readonly o: ExportContext & { events: WarningEvents }) {}

  /** Global services exported. */
  get count(): number {
    return this.exported.size;
  }

  onService(type: string, svc: Service): void {
    const id = nsName(svc);
    if (type === 'delete') this.services.delete(id);
    else this.services.set(id, svc);
    this.recompute(id);
  }

  onSlice(type: string, slice: EndpointSlice): void {
    const svcName = slice.metadata?.labels?.['kubernetes.io/service-name'];
    if (!svcName) return;
    const id = `${slice.metadata?.namespace}/${svcName}`;
    let bySlice = this.slices.get(id);
    if (type === 'delete') bySlice?.delete(slice.metadata!.name!);
    else {
      if (!bySlice) this.slices.set(id, (bySlice = new Map<string, EndpointSlice>()));
      bySlice.set(slice.metadata!.name!, slice);
    }
    if (bySlice?.size === 0) this.slices.delete(id);
    this.recompute(id);
  }

  status(): ExportStatus['services'] {
    return [...this.exported.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, s]) => ({ name, shared: s.shared, affinity: s.affinity, backends: s.backends.length, readyBackends: s.backends.filter((b) => b.ready).length }));
  }

  private recompute(id: string): void {
    const [namespace, name] = id.split('/') as [string, string];
    const key = keys.service(this.o.cluster, namespace, name);
    const localKey = keys.localService(this.o.cluster, namespace, name);
    const svc = this.services.get(id);
    const parsed = svc ? parseGlobalAnnotations(svc.metadata?.annotations) : undefined;
    if (svc && parsed && !parsed.ok) this.reportBadAnnotation(svc, parsed.annotation, parsed.error);
    const global = Boolean(parsed?.ok && parsed.spec.global);
    if (!svc || !global || svc.spec?.type === 'ExternalName') {
      if (this.exported.delete(id)) this.updateGauges();
      this.o.writer.set(key, null);
    }
    if (!svc || svc.spec?.type === 'ExternalName') {
      this.o.writer.set(localKey, null);
      return;
    }
    const slices = this.slices.get(id)?.values() ?? [];
    if (!global) {
      // Not exported, but this cluster's agents still serve its ClusterIP with its local backends (a service
      // with a bad annotation too: Kubernetes serves it whatever Skein thinks of the annotation).
      const value = globalServiceValue(this.o.cluster, svc, { global: false, shared: false, affinity: 'none' }, slices);
      this.o.writer.set(localKey, value.clusterIps.length ? encodeValue(GlobalService, value) : null);
      return;
    }
    const value = globalServiceValue(this.o.cluster, svc, (parsed as { spec: GlobalSpec }).spec, slices);
    this.exported.set(id, value);
    this.o.writer.set(localKey, null);
    this.o.writer.set(key, encodeValue(GlobalService, value));
    this.updateGauges();
  }

  private updateGauges(): void {
    let ready = 0;
    let notReady = 0;
    for (const s of this.exported.values()) for (const b of s.backends) {
      if (b.ready) ready++;
      else notReady++;
    }
    this.o.metrics.exportedServices.set(this.exported.size);
    this.o.metrics.exportedBackends.set({ ready: 'true' }, ready);
    this.o.metrics.exportedBackends.set({ ready: 'false' }, notReady);
  }

  /** A Warning Event on the Service, once per bad value, and a log line naming annotation and fix. */
  private reportBadAnnotation(svc: Service, annotation: string, error: string): void {
    const dedupe = `${svc.metadata?.uid}/${annotation}/${svc.metadata?.annotations?.[annotation]}`;
    if (this.reportedAnnotations.has(dedupe)) return;
    this.reportedAnnotations.add(dedupe);
    this.o.metrics.invalidAnnotations.inc();
    this.o.log.warn({ service: nsName(svc), annotation }, `service not exported: ${error}`);
    this.o.events.post('Service', svc, 'InvalidSkeinAnnotation', `not exported to the mesh: ${error}`);
  }
}
