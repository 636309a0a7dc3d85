// Global-service annotations: Skein's own and Cilium's (current and legacy) as aliases, so a ClusterMesh
// user's Services export unchanged. A bad value is an error naming the annotation and the allowed values.
import type { Affinity } from './values.js';

const ALIASES = {
  global: ['skein.io/global', 'service.cilium.io/global', 'io.cilium/global-service'],
  shared: ['skein.io/shared', 'service.cilium.io/shared', 'io.cilium/shared-service'],
  affinity: ['skein.io/affinity', 'service.cilium.io/affinity', 'io.cilium/service-affinity'],
} as const;

export interface GlobalSpec {
  global: boolean;
  shared: boolean;
  affinity: Affinity;
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

export function parseGlobalAnnotations(annotations: Record<string, string> | undefined): AnnotationResult {
  const a = annotations ?? {};
  const global = read(a, ALIASES.global, BOOL, 'false');
  if (!global.ok) return global;
  const isGlobal = global.value === 'true';
  const shared = read(a, ALIASES.shared, BOOL, 'true');
  if (!shared.ok) return { ...shared, global: isGlobal };
  const affinity = read(a, ALIASES.affinity, ['local', 'remote', 'none'] as const, 'none');
  if (!affinity.ok) return { ...affinity, global: isGlobal };
  return { ok: true, spec: { global: isGlobal, shared: shared.value === 'true', affinity: affinity.value } };
}
