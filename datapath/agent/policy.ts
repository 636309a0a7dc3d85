// Which backends a service's frontends should use right now: all policy lives here, in user space, and the
// BPF side only ever sees the result. Per affinity: `local` uses ready local backends and falls back to
// remote ones only when no local backend is ready; `remote` the reverse; `none` every ready backend.
// Terminating-but-serving backends are used only when nothing ready is left anywhere; a stale remote's
// backends only when no fresh cluster can serve. Backends outlier detection ejected (outliers.ts) are left
// out as if not ready, so "all local backends ejected" fails over like "no local backend ready"; ejection
// alone never empties a frontend (if nothing else is left, the ejected stay).
//
// Stale remotes (no heartbeat for --remote-stale-after, sync/peer-health.ts) are out of every active set
// while any fresh ready backend exists: with `none` they are not spread over, with `local` they are not
// fallen back to while another fresh remote has ready backends. When every ready backend is stale they are
// used after all: a peer that stopped heartbeating may still serve, and nothing else can.
//
// Spillover (`skein.io/local-min-ready`, spillover.ts): with `local` and fewer ready local backends than the
// minimum, fresh ready remote backends join, weighted by repeating backends in the slot list.
import type { Backend, ServicePort } from '../../mesh/schema/values.js';
import type { MergedService } from './merged-view.js';
import type { Programmed } from '../socket-lb.js';
import { minReadyOf, weightedSlots } from './spillover.js';

type Tagged = { b: Backend; local: boolean; stale: boolean };

/** `minReady`: spillover's M (0: none). */
function pick(all: Tagged[], affinity: MergedService['affinity'], minReady = 0): Tagged[] {
  for (const usable of [(t: Tagged) => t.b.ready && !t.stale, (t: Tagged) => t.b.ready, (t: Tagged) => t.b.serving && t.b.terminating]) {
    const candidates = all.filter(usable);
    if (candidates.length === 0) continue;
    if (affinity === 'none') return candidates;
    const preferred = candidates.filter((t) => t.local === (affinity === 'local'));
    if (preferred.length === 0) return candidates;
    // Spillover: only among ready backends (the first tier), to fresh remotes.
    if (affinity === 'local' && preferred.length < minReady && preferred[0]!.b.ready) return weightedSlots(preferred, candidates.filter((t) => !t.local && !t.stale), minReady);
    return preferred;
  }
  return [];
}

function backendPort(b: Backend, port: ServicePort): number | undefined {
  const p = b.ports[port.name];
  return p && p.protocol === port.protocol ? p.port : undefined;
}

/** `chosen` without the backends ejected on this port, picked again from what is left; `chosen` if nothing is. */
function withoutEjected(tagged: Tagged[], chosen: Tagged[], affinity: MergedService['affinity'], port: ServicePort, ejected: ReadonlySet<string>, minReady = 0): Tagged[] {
  const out = (t: Tagged) => {
    const p = backendPort(t.b, port);
    return p !== undefined && ejected.has(`${port.protocol}/${t.b.ip}:${p}`);
  };
  if (!chosen.some(out)) return chosen;
  const left = pick(tagged.filter((t) => !out(t)), affinity, minReady);
  return left.length > 0 ? left : chosen;
}

/**
 * The frontends of a merged service (the local cluster's ClusterIPs × ports) and their active backends.
 * `ejected`: backends (PROTO/ip:port) outlier detection took out of active sets.
 */
export function activeBackends(m: MergedService, ejected: ReadonlySet<string> = new Set()): Programmed[] {
  const local = m.clusters.find((c) => c.local);
  if (!local) return []; // no local frontend: nothing a local client could connect to
  const tagged = m.clusters.flatMap((c) => c.service.backends.map((b) => ({ b, local: c.local, stale: c.stale })));
  const minReady = minReadyOf(m.localMinReady, local.service.backends);
  const chosen = pick(tagged, m.affinity, minReady);
  const out: Programmed[] = [];
  for (const ip of local.service.clusterIps) {
    for (const port of local.service.ports) {
      if (port.protocol === 'SCTP') continue;
      const backends = (ejected.size ? withoutEjected(tagged, chosen, m.affinity, port, ejected, minReady) : chosen).flatMap((t) => {
        const p = backendPort(t.b, port);
        return p ? [{ ip: t.b.ip, port: p }] : [];
      });
      out.push({ frontend: { ip, port: port.port, proto: port.protocol }, backends });
    }
  }
  return out;
}
