// Services and their EndpointSlices → one GlobalService value per service. A global one (annotation) goes
// to the export prefix peers read; any other service with a ClusterIP to the local-only prefix, so this
// cluster's agents still serve it with its local backends. Each event recomputes only its own service.
//
// A bad Skein annotation on a service already exported is a typo, not a withdrawal: the export keeps its
// last good annotation settings (global, shared, affinity) — its endpoints, ports and ClusterIPs still
// follow Kubernetes, so the kept export never points at pods long gone — and a Warning Event names the
// annotation, the bad value and the accepted ones. Fixing it applies the new settings; removing the global
// annotation (or setting it "false") still unexports. A service never exported is not exported until
// fixed. After a restart the last good export is only in the mesh etcd: it is read back during the
// initial sync (`lastExported`) and kept instead of pruned.
//
// A pod deleted from the API (grace 0: from its deletion timestamp on; or the kubelet's final delete)
// leaves its services' exports at once, without waiting for the EndpointSlice controller to write the
// slices (one write and its watch fewer on the path of a killed backend): its endpoints are left out by pod
// UID until the slices drop them.

import { retryUntilDone } from '../../mesh/backoff.js';
import { keys } from '../../mesh/schema/keys.js';
import { decodeJson, encodeValue, GlobalService } from '../../mesh/schema/values.js';
import { parseGlobalAnnotations, type AnnotationResult, type GlobalSpec } from '../../mesh/schema/annotations.js';
import type { ExportStatus } from '../../mesh/status.js';
import { nsName, type ExportContext } from './context.js';
import { globalServiceValue } from './service-model.js';
import type { WarningEvents } from './warning-events.js';
import type { EndpointSlice, Pod, Service } from '../../mesh/kube/objects.js';

/** How long a deleted pod's UID is remembered: far longer than the EndpointSlice controller takes to catch up. */
const DELETED_POD_MEMORY_MS = 10 * 60_000;

const NOT_GLOBAL: GlobalSpec = { global: false, shared: false, affinity: 'none' };

type BadAnnotation = Extract<AnnotationResult, { ok: false }>;

interface ServiceExportOptions extends ExportContext {
  events: WarningEvents;
  /** Reads an export key from the mesh etcd (undefined: absent); without it nothing is read back after a restart. */
  lastExported?: (key: string) => Promise<string | undefined>;
}

/** Why a global service programs nothing on this cluster's nodes, and how to fix it; undefined when it does. */
function notProgrammed(svc: Service, value: GlobalService): { cause: string; message: string } | undefined {
  if (value.clusterIps.length === 0) {
    if (svc.spec?.clusterIP === 'None' || svc.spec?.clusterIPs?.includes('None')) {
      return {
        cause: 'headless',
        message:
          'global service is headless (clusterIP: None): Skein load-balances a ClusterIP at the socket, and a headless service has none, so nothing is programmed for it on this cluster\'s nodes. ' +
          "Its ready endpoints are still exported for other clusters' twins that have a ClusterIP. To reach it across clusters from here, recreate it without clusterIP: None (clusterIP cannot be changed in place)",
      };
    }
    const ips = (svc.spec?.clusterIPs ?? [svc.spec?.clusterIP]).filter(Boolean).join(', ') || 'none';
    return {
      cause: 'no-ipv4-cluster-ip',
      message: `global service has no IPv4 ClusterIP (clusterIPs: ${ips}): Skein programs IPv4 ClusterIPs only, so nothing is programmed for it. Make it IPv4 or dual-stack (spec.ipFamilyPolicy: PreferDualStack)`,
    };
  }
  if (value.ports.length === 0) {
    return { cause: 'no-ports', message: 'global service has no ports (spec.ports is empty): Skein programs ClusterIP:port frontends, so nothing is programmed for it. Add the ports clients connect to under spec.ports' };
  }
  if (value.ports.every((p) => p.protocol === 'SCTP')) {
    return { cause: 'sctp-only', message: 'global service has only SCTP ports, which Skein does not program, so nothing is programmed for it. Add the TCP or UDP ports clients connect to under spec.ports' };
  }
  return undefined;
}

export class ServiceExport {
  private readonly services = new Map<string, Service>();
  /** Per service (`namespace/name`): its slices by name. */
  private readonly slices = new Map<string, Map<string, EndpointSlice>>();
  private readonly exported = new Map<string, GlobalService>();
  /** Bad annotation values already reported, per service (uid/annotation/value/outcome): one Event each, not one per resync. */
  private readonly reportedAnnotations = new Map<string, Set<string>>();
  /** Per service: the last good export kept despite a bad annotation, and why (status). */
  private readonly kept = new Map<string, string>();
  /** Per global service that programs nothing: uid/cause (reported once while it lasts) and the message. */
  private readonly unprogrammed = new Map<string, { key: string; message: string }>();
  /** Last good exports being read back from the mesh etcd during the initial sync, or already read. */
  private readonly lookups = new Map<string, Promise<void> | 'done'>();
  /** After the initial sync every export is this process's own (the rest was pruned): nothing to read back. */
  private live = false;
  /** Pod UID → the services whose slices listed it; and UIDs of pods deleted from the API → when. */
  private readonly servicesOfPod = new Map<string, Set<string>>();
  private readonly deletedPods = new Map<string, number>();

  constructor(private readonly o: ServiceExportOptions) {}

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
    if (type !== 'delete') {
      for (const ep of slice.endpoints ?? []) {
        const uid = ep.targetRef?.kind === 'Pod' ? ep.targetRef.uid : undefined;
        if (!uid || this.deletedPods.has(uid)) continue;
        let ids = this.servicesOfPod.get(uid);
        if (!ids) this.servicesOfPod.set(uid, (ids = new Set()));
        ids.add(id);
      }
    }
    this.recompute(id);
  }

  /** A pod deleted from the API: the services whose slices list it are exported without it now. */
  onPod(type: string, pod: Pod): void {
    // Deleted with grace 0 (a kill): the API writes the deletion timestamp, then removes the pod; the first
    // write is enough, the kubelet is already killing it.
    const killed = pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionGracePeriodSeconds === 0;
    if ((type !== 'delete' && !killed) || !pod.metadata?.uid) return;
    const now = Date.now();
    for (const [uid, at] of this.deletedPods) {
      if (now - at < DELETED_POD_MEMORY_MS) break; // oldest first
      this.deletedPods.delete(uid);
    }
    const uid = pod.metadata.uid;
    const ids = this.servicesOfPod.get(uid);
    this.servicesOfPod.delete(uid);
    if (!ids) return;
    this.deletedPods.set(uid, now);
    for (const id of ids) this.recompute(id);
  }

  /**
   * Call after the informers' initial lists, before pruning: waits until the last good exports of services
   * with a bad annotation are read back (so they are desired, not pruned). Later ones need no read.
   */
  async settled(): Promise<void> {
    for (;;) {
      const pending = [...this.lookups.values()].filter((l) => l !== 'done');
      if (pending.length === 0) break;
      await Promise.all(pending);
    }
    this.live = true;
  }

  status(): ExportStatus['services'] {
    return [...this.exported.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, s]) => {
        const warning = [this.kept.get(name), this.unprogrammed.get(name)?.message].filter(Boolean).join('; ');
        return { name, shared: s.shared, affinity: s.affinity, backends: s.backends.length, readyBackends: s.backends.filter((b) => b.ready).length, ...(warning ? { warning } : {}) };
      });
  }

  private recompute(id: string): void {
    const [namespace, name] = id.split('/') as [string, string];
    const key = keys.service(this.o.cluster, namespace, name);
    const localKey = keys.localService(this.o.cluster, namespace, name);
    const svc = this.services.get(id);
    if (!svc) {
      this.reportedAnnotations.delete(id);
      this.lookups.delete(id);
    }
    const spec = svc && svc.spec?.type !== 'ExternalName' ? this.specOf(id, key, svc) : NOT_GLOBAL;
    if (!svc || !spec.global || svc.spec?.type === 'ExternalName') {
      this.unexport(id, key);
    }
    if (!svc || svc.spec?.type === 'ExternalName') {
      this.o.writer.set(localKey, null);
      return;
    }
    const slices = this.slices.get(id)?.values() ?? [];
    if (!spec.global) {
      // Not exported, but this cluster's agents still serve its ClusterIP with its local backends (a service
      // with a bad annotation too: Kubernetes serves it whatever Skein thinks of the annotation).
      const value = globalServiceValue(this.o.cluster, svc, NOT_GLOBAL, slices, this.deletedPods);
      this.o.writer.set(localKey, value.clusterIps.length ? encodeValue(GlobalService, value) : null);
      return;
    }
    const value = globalServiceValue(this.o.cluster, svc, spec, slices, this.deletedPods);
    this.exported.set(id, value);
    this.o.writer.set(localKey, null);
    this.o.writer.set(key, encodeValue(GlobalService, value));
    this.updateGauges();
    this.reportNotProgrammed(id, svc, value);
  }

  /** What the annotations ask for; with a bad one, the last good settings of a service already exported. */
  private specOf(id: string, key: string, svc: Service): GlobalSpec {
    const parsed = parseGlobalAnnotations(svc.metadata?.annotations);
    if (parsed.ok) {
      this.kept.delete(id);
      return parsed.spec;
    }
    // The global annotation itself valid and not "true": the owner withdrew the service, whatever else is bad.
    const typo = parsed.global !== false;
    const last = typo ? this.exported.get(id) : undefined;
    if (last) {
      this.kept.set(id, `kept at its last good annotations (shared "${last.shared}", affinity "${last.affinity}"): ${parsed.error}`);
      this.reportBadAnnotation(id, svc, parsed, last);
      return { global: true, shared: last.shared, affinity: last.affinity, ...(last.localMinReady ? { localMinReady: last.localMinReady } : {}) };
    }
    this.kept.delete(id);
    // Until the mesh etcd says whether a last good export survives from before a restart, report nothing:
    // the Event must say which of the two it is.
    if (typo && this.readBack(id, key)) return NOT_GLOBAL;
    this.reportBadAnnotation(id, svc, parsed, undefined);
    return NOT_GLOBAL;
  }

  /** Starts (once per service, during the initial sync) reading its last good export back; true while it is pending. */
  private readBack(id: string, key: string): boolean {
    const state = this.lookups.get(id);
    if (state === 'done') return false;
    if (state) return true;
    const read = this.o.lastExported;
    if (this.live || !read) return false;
    const lookup = retryUntilDone(`reading the last good export of ${id}`, () => read(key), this.o.log).then((raw) => {
      if (this.lookups.get(id) !== lookup) return; // the service went away meanwhile
      this.lookups.set(id, 'done');
      const last = raw === undefined ? undefined : decodeJson(GlobalService, raw);
      // Taken as if this process had exported it; recompute decides whether the annotation still calls for it.
      if (last?.cluster === this.o.cluster && !this.exported.has(id)) this.exported.set(id, last);
      this.recompute(id);
    });
    this.lookups.set(id, lookup);
    return true;
  }

  private unexport(id: string, key: string): void {
    if (this.exported.delete(id)) this.updateGauges();
    this.kept.delete(id);
    this.unprogrammed.delete(id);
    this.o.writer.set(key, null);
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

  /** A Warning Event on the Service, once per bad value and outcome, and a log line naming annotation and fix. */
  private reportBadAnnotation(id: string, svc: Service, bad: BadAnnotation, kept: GlobalService | undefined): void {
    const dedupe = `${svc.metadata?.uid}/${bad.annotation}/${svc.metadata?.annotations?.[bad.annotation]}/${kept ? 'kept' : 'refused'}`;
    let reported = this.reportedAnnotations.get(id);
    if (!reported) this.reportedAnnotations.set(id, (reported = new Set()));
    if (reported.has(dedupe)) return;
    reported.add(dedupe);
    this.o.metrics.invalidAnnotations.inc();
    if (!kept) {
      this.o.log.warn({ service: nsName(svc), annotation: bad.annotation }, `service not exported: ${bad.error}`);
      this.o.events.post('Service', svc, 'InvalidSkeinAnnotation', `not exported to the mesh: ${bad.error}`);
      return;
    }
    const settings = `shared "${kept.shared}", affinity "${kept.affinity}"`;
    this.o.log.warn({ service: nsName(svc), annotation: bad.annotation }, `service export kept at its last good annotations (${settings}): ${bad.error}`);
    this.o.events.post(
      'Service',
      svc,
      'InvalidSkeinAnnotation',
      `still exported to the mesh with its last good annotations (${settings}) until this is fixed: ${bad.error}. To withdraw the service from the mesh instead, remove the global annotation or set it to "false"`,
    );
  }

  /** A Warning Event once per service and cause while a global service programs nothing, and a log line. */
  private reportNotProgrammed(id: string, svc: Service, value: GlobalService): void {
    const why = notProgrammed(svc, value);
    if (!why) return void this.unprogrammed.delete(id);
    const key = `${svc.metadata?.uid}/${why.cause}`;
    if (this.unprogrammed.get(id)?.key === key) return;
    this.unprogrammed.set(id, { key, message: why.message });
    this.o.log.warn({ service: id, cause: why.cause }, why.message);
    this.o.events.post('Service', svc, 'SkeinNotProgrammed', why.message);
  }
}
