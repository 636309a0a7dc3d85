// When the client node's agent took the faulted backends out of the active set, from its published view
// (AgentView.ejected in mesh/schema/values.ts, validated with the status it arrives in). An agent older than
// outlier detection publishes no `ejected`: the drill then measures ejection from the client's answers only.
import type { AgentView } from '../../mesh/schema/values.js';

export const publishesEjections = (view: AgentView): boolean => view.ejected !== undefined;

/** "PROTO/ip:port", as the agent names a backend. */
const BACKEND = /^([A-Z]+)\/(.+):\d+$/;

/**
 * The moment the view shows every faulted backend (by pod IP, of the frontend's protocol) ejected: the
 * latest of their `since` times. undefined: one is not ejected (since `notBefore`: an older ejection is not
 * this fault's).
 */
export function agentEjectedAt(view: AgentView, frontend: string, faultedIps: ReadonlySet<string>, notBefore = -Infinity): number | undefined {
  if (!view.ejected || faultedIps.size === 0) return undefined;
  const proto = frontend.split('/', 1)[0];
  const ejected = view.ejected.flatMap((e) => {
    const m = BACKEND.exec(e.backend);
    return m && m[1] === proto ? [{ ip: m[2]!, since: Date.parse(e.since) }] : [];
  });
  let latest = -Infinity;
  for (const ip of faultedIps) {
    const since = ejected.find((e) => e.ip === ip && e.since >= notBefore)?.since;
    if (since === undefined) return undefined;
    latest = Math.max(latest, since);
  }
  return latest;
}
