// Global-service annotations: Skein's own and Cilium's (current and legacy) as aliases, so a ClusterMesh
// user's Services export unchanged. A bad value is an error naming the annotation and the allowed values.
import type { Affinity } from '../schema/values.js';

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

export type AnnotationResult = { ok: true; spec: GlobalSpec } | { ok: false; annotation: string; error: string };

function pick(annotations: Record<string, string>, names: readonly string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = annotations[name];
    if (value !== undefined) return { name, value: value.trim() };
  }
  return undefined;
}

function bool(found: { name: string; value: string }): boolean | string {
  const v = found.value.toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  return `${found.name}: "${found.value}" is not allowed; use "true" or "false"`;
}

export function parseGlobalAnnotations(annotations: Record<string, string> | undefined): AnnotationResult {
  const a = annotations ?? {};
  const g = pick(a, ALIASES.global);
  let global = false;
  if (g) {
    const v = bool(g);
    if (typeof v === 'string') return { ok: false, annotation: g.name, error: v };
    global = v;
  }
  const s = pick(a, ALIASES.shared);
  let shared = true;
  if (s) {
    const v = bool(s);
    if (typeof v === 'string') return { ok: false, annotation: s.name, error: v };
    shared = v;
  }
  const af = pick(a, ALIASES.affinity);
  let affinity: Affinity = 'none';
  if (af) {
    const v = af.value.toLowerCase();
    if (v !== 'local' && v !== 'remote' && v !== 'none') {
      return { ok: false, annotation: af.name, error: `${af.name}: "${af.value}" is not allowed; use "local", "remote" or "none"` };
    }
    affinity = v;
  }
  return { ok: true, spec: { global, shared, affinity } };
}
