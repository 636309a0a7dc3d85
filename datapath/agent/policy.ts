// Which backends a service's frontends should use right now: all policy lives here, in user space, and the
// BPF side only ever sees the result. Per affinity: `local` uses ready local backends and falls back to
// remote ones only when no local backend is ready; `remote` the reverse; `none` every ready backend.
// Terminating-but-serving backends are used only when nothing ready is left anywhere; a stale remote's
// backends only when no fresh cluster can serve.
import type { Backend, ServicePort } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import type { Programmed } from '../socket-lb.js';

type Tagged = { b: Backend; local: boolean; stale: boolean };

function pick(all: Tagged[], affinity: MergedService['affinity']): Tagged[] {
  for (const usable of [(t: Tagged) => t.b.ready && !t.stale, (t: Tagged) => t.b.ready, (t: Tagged) => t.b.serving && t.b.terminating]) {
    const candidates = all.filter(usable);
    if (candidates.length === 0) continue;
    if (affinity === 'none') return candidates;
    const preferred = candidates.filter((t) => t.local === (affinity === 'local'));
    return preferred.length > 0 ? preferred : candidates;
  }
  return [];
}

function backendPort(b: Backend, port: ServicePort): number | undefined {
  const p = b.ports[port.name];
  return p && p.protocol === port.protocol ? p.port : undefined;
}

/** The frontends of a merged service (the local cluster's ClusterIPs × ports) and their active backends. */
export function activeBackends(m: MergedService): Programmed[] {
  const local = m.clusters.find((c) => c.local);
  if (!local) return []; // no local frontend: nothing a local client could connect to
  const tagged = m.clusters.flatMap((c) => c.service.backends.map((b) => ({ b, local: c.local, stale: c.stale })));
  const chosen = pick(tagged, m.affinity);
  const out: Programmed[] = [];
  for (const ip of local.service.clusterIps) {
    for (const port of local.service.ports) {
      if (port.protocol === 'SCTP') continue;
      const backends = chosen.flatMap((t) => {
        const p = backendPort(t.b, port);
        return p ? [{ ip: t.b.ip, port: p }] : [];
      });
      out.push({ frontend: { ip, port: port.port, proto: port.protocol }, backends });
    }
  }
  return out;
}
