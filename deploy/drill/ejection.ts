// Ejections as a node agent publishes them, read loosely: the agent's view (AgentView in mesh/schema/values.ts)
// may carry `ejected` — backends the datapath's outlier detection took out of the active set, with since
// when. Older agents do not publish it; then the drill measures ejection from the client's answers only.
// Read as a list of entries naming the backend ("PROTO/ip:port", or ip:port) and when (since), or as a map
// from frontend (PROTO/ip:port) to such a list or to a map backend → entry.

interface Ejection {
  proto?: string;
  ip: string;
  since?: number;
}

const time = (v: unknown): number | undefined => {
  const t = typeof v === 'string' ? Date.parse(v) : typeof v === 'number' ? v : NaN;
  return Number.isFinite(t) ? t : undefined;
};

function parseAddr(addr: string): { proto?: string; ip: string } {
  const m = /^(?:([A-Za-z]+)\/)?(.*?)(?::\d+)?$/.exec(addr)!;
  return { proto: m[1]?.toUpperCase(), ip: m[2]! };
}

function entry(v: unknown, key?: string): Ejection | undefined {
  if (typeof v === 'string') return key ? { ...parseAddr(key), since: time(v) } : parseAddr(v);
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const addr = [o.backend, o.address, o.ip, key].find((x): x is string => typeof x === 'string');
  return addr ? { ...parseAddr(addr), since: time(o.since ?? o.at ?? o.ejectedAt) } : undefined;
}

function ejectionsOf(view: unknown, frontend: string): Ejection[] | undefined {
  if (typeof view !== 'object' || view === null) return undefined;
  const ejected = (view as Record<string, unknown>).ejected;
  if (Array.isArray(ejected)) return ejected.flatMap((e) => entry(e) ?? []);
  if (typeof ejected !== 'object' || ejected === null) return undefined;
  const mine = (ejected as Record<string, unknown>)[frontend];
  if (Array.isArray(mine)) return mine.flatMap((e) => entry(e) ?? []);
  if (typeof mine === 'object' && mine !== null) return Object.entries(mine).flatMap(([k, e]) => entry(e, k) ?? []);
  return [];
}

/** Whether the view publishes ejections at all (an agent that does not: the drill does not poll it). */
export function publishesEjections(view: unknown): boolean {
  return ejectionsOf(view, '') !== undefined;
}

/**
 * The moment the view shows every faulted backend (by pod IP, of the frontend's protocol) ejected: the
 * latest of their `since` times. undefined: one is not ejected (since `notBefore`: an older ejection is not
 * this fault's), or the view does not say since when.
 */
export function agentEjectedAt(view: unknown, frontend: string, faultedIps: ReadonlySet<string>, notBefore = -Infinity): number | undefined {
  const ejections = ejectionsOf(view, frontend);
  if (!ejections || faultedIps.size === 0) return undefined;
  const proto = parseAddr(frontend).proto;
  let latest = -Infinity;
  for (const ip of faultedIps) {
    const since = ejections.find((e) => e.ip === ip && (!e.proto || !proto || e.proto === proto) && e.since !== undefined && e.since >= notBefore)?.since;
    if (since === undefined) return undefined;
    latest = Math.max(latest, since);
  }
  return latest;
}
