// Global-service annotations: Skein's own and Cilium's (current and legacy) as aliases, so a ClusterMesh
// user's Services export unchanged. A bad value is an error naming the annotation and the allowed values.
import type { Affinity, LocalMinReady } from './values.js';

const ALIASES = {
  global: ['skein.io/global', 'service.cilium.io/global', 'io.cilium/global-service'],
  shared: ['skein.io/shared', 'service.cilium.io/shared', 'io.cilium/shared-service'],
  affinity: ['skein.io/affinity', 'service.cilium.io/affinity', 'io.cilium/service-affinity'],
} as const;

/** Skein's own (Cilium has no equivalent): spillover below this many ready local backends. */
const LOCAL_MIN_READY = 'skein.io/local-min-ready';

export interface GlobalSpec {
  global: boolean;
  shared: boolean;
  affinity: Affinity;
  /** Absent: all-or-nothing local affinity (remote backends only when no local one is ready). */
  localMinReady?: LocalMinReady;
}

export type AnnotationResult =
  | { ok: true; spec: GlobalSpec }
  /** `global`: the global annotation's own value when it is valid and the error is in another (undefined: it is the bad one). */
  | { ok: false; annotation: string; error: string; global?: boolean };

/** Quoted and joined for an error message: "a", "b" or "c". */
function choices(allowed: readonly string[]): string {
  const q = allowed.map((v) => `"${v}"`);
  return q.length > 1 ? `${q.slice(0, -1).join(', ')} or ${q.at(-1)}` : q.join('');
}

type Read<T> = { ok: true; value: T } | { ok: false; annotation: string; error: string };

/** The first alias present, its value (case-insensitive) one of `allowed`; `fallback` when none is set. */
function read<T extends string>(annotations: Record<string, string>, names: readonly string[], allowed: readonly T[], fallback: T): Read<T> {
  const name = names.find((n) => annotations[n] !== undefined);
  if (name === undefined) return { ok: true, value: fallback };
  const raw = annotations[name]!.trim();
  const value = allowed.find((v) => v === raw.toLowerCase());
  if (value !== undefined) return { ok: true, value };
  return { ok: false, annotation: name, error: `${name}: "${raw}" is not allowed; use ${choices(allowed)}` };
}

const BOOL = ['true', 'false'] as const;

/**
 * `skein.io/local-min-ready`: a whole number of ready local backends ("2", at least 1), or a percentage of
 * the service's local endpoints that are not terminating ("50%", 1% to 100%). Absent: undefined.
 */
function readLocalMinReady(annotations: Record<string, string>): Read<LocalMinReady | undefined> {
  const raw = annotations[LOCAL_MIN_READY]?.trim();
  if (raw === undefined) return { ok: true, value: undefined };
  const count = /^\d{1,5}$/.exec(raw) ? Number(raw) : NaN;
  if (count >= 1 && count <= 65535) return { ok: true, value: { count } };
  const percent = /^(\d{1,3})%$/.exec(raw);
  if (percent && Number(percent[1]) >= 1 && Number(percent[1]) <= 100) return { ok: true, value: { percent: Number(percent[1]) } };
  return {
    ok: false,
    annotation: LOCAL_MIN_READY,
    error:
      `${LOCAL_MIN_READY}: "${raw}" is not allowed; use a whole number of ready local backends from 1 to 65535 (for example "2") ` +
      `or a percentage of the service's local endpoints from 1% to 100% (for example "50%")`,
  };
}

export function parseGlobalAnnotations(annotations: Record<string, string> | undefined): AnnotationResult {
  const a = annotations ?? {};
  const global = read(a, ALIASES.global, BOOL, 'false');
  if (!global.ok) return global;
  const isGlobal = global.value === 'true';
  const shared = read(a, ALIASES.shared, BOOL, 'true');
  if (!shared.ok) return { ...shared, global: isGlobal };
  const affinity = read(a, ALIASES.affinity, ['local', 'remote', 'none'] as const, 'none');
  if (!affinity.ok) return { ...affinity, global: isGlobal };
  const localMinReady = readLocalMinReady(a);
  if (!localMinReady.ok) return { ...localMinReady, global: isGlobal };
  const spec: GlobalSpec = { global: isGlobal, shared: shared.value === 'true', affinity: affinity.value };
  if (localMinReady.value) spec.localMinReady = localMinReady.value;
  return { ok: true, spec };
}
