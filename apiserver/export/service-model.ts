// A Service and its EndpointSlices → the exported GlobalService value. Deterministic (sorted) so an
// unchanged service serializes to the same bytes and is never rewritten.
import { isIPv4 } from 'node:net';

import type { Backend, GlobalService } from '../../mesh/schema/values.js';
import type { GlobalSpec } from '../../mesh/schema/annotations.js';
import type { EndpointSlice, Service } from '../../mesh/kube/objects.js';

type Protocol = 'TCP' | 'UDP' | 'SCTP';
const proto = (p: string | undefined): Protocol => (p === 'UDP' || p === 'SCTP' ? p : 'TCP');

function backendsFromSlices(slices: Iterable<EndpointSlice>, deletedPods: ReadonlySet<string> | ReadonlyMap<string, unknown>): Backend[] {
  const byIp = new Map<string, Backend>();
  for (const slice of slices) {
    if (slice.addressType !== 'IPv4') continue;
    const ports: Backend['ports'] = {};
    for (const p of slice.ports ?? []) if (p.port) ports[p.name ?? ''] = { port: p.port, protocol: proto(p.protocol) };
    for (const ep of slice.endpoints ?? []) {
      // A pod already deleted from the API is gone, whatever the slice (not yet updated) still says.
      if (ep.targetRef?.uid && deletedPods.has(ep.targetRef.uid)) continue;
      // EndpointSlice semantics: nil ready means ready; nil serving means "same as ready".
      const ready = ep.conditions?.ready ?? true;
      const serving = ep.conditions?.serving ?? ready;
      const terminating = ep.conditions?.terminating ?? false;
      for (const ip of ep.addresses ?? []) {
        if (!isIPv4(ip)) continue;
        const prev = byIp.get(ip);
        if (prev) {
          Object.assign(prev.ports, ports);
          continue;
        }
        const b: Backend = { ip, ports: { ...ports }, ready, serving, terminating };
        if (ep.nodeName) b.node = ep.nodeName;
        if (ep.zone) b.zone = ep.zone;
        byIp.set(ip, b);
      }
    }
  }
  return [...byIp.values()]
    .map((b) => ({ ...b, ports: Object.fromEntries(Object.entries(b.ports).sort(([a], [c]) => a.localeCompare(c))) }))
    .sort((a, b) => a.ip.localeCompare(b.ip, 'en', { numeric: true }));
}

/** `deletedPods`: UIDs of pods deleted from the API, whose endpoints are left out. */
export function globalServiceValue(cluster: string, svc: Service, spec: GlobalSpec, slices: Iterable<EndpointSlice>, deletedPods: ReadonlySet<string> | ReadonlyMap<string, unknown> = new Set()): GlobalService {
  const clusterIps = (svc.spec?.clusterIPs ?? (svc.spec?.clusterIP ? [svc.spec.clusterIP] : [])).filter((ip) => isIPv4(ip));
  return {
    cluster,
    namespace: svc.metadata!.namespace!,
    name: svc.metadata!.name!,
    shared: spec.shared,
    affinity: spec.affinity,
    ...(spec.localMinReady ? { localMinReady: spec.localMinReady } : {}),
    clusterIps,
    ports: (svc.spec?.ports ?? []).map((p) => ({ name: p.name ?? '', port: p.port, protocol: proto(p.protocol) })),
    backends: backendsFromSlices(slices, deletedPods),
  };
}
