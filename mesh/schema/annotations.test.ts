import { describe, expect, it } from 'vitest';
import { parseGlobalAnnotations } from './annotations.js';

describe('global service annotations', () => {
  it('defaults: not global, shared, affinity none', () => {
    expect(parseGlobalAnnotations({})).toEqual({ ok: true, spec: { global: false, shared: true, affinity: 'none' } });
  });
  it('reads skein.io and Cilium aliases alike', () => {
    expect(parseGlobalAnnotations({ 'skein.io/global': 'true', 'skein.io/affinity': 'local' })).toMatchObject({ ok: true, spec: { global: true, affinity: 'local' } });
    expect(parseGlobalAnnotations({ 'service.cilium.io/global': 'true', 'service.cilium.io/shared': 'false', 'service.cilium.io/affinity': 'remote' })).toEqual({
      ok: true,
      spec: { global: true, shared: false, affinity: 'remote' },
    });
    expect(parseGlobalAnnotations({ 'io.cilium/global-service': 'TRUE' })).toMatchObject({ spec: { global: true } });
  });
  it('prefers skein.io over the Cilium alias when both are set', () => {
    expect(parseGlobalAnnotations({ 'skein.io/affinity': 'remote', 'service.cilium.io/affinity': 'local', 'skein.io/global': 'true' })).toMatchObject({ spec: { affinity: 'remote' } });
  });
  it.each([
    [{ 'skein.io/global': 'yes' }, 'skein.io/global', /"yes" is not allowed; use "true" or "false"/],
    [{ 'skein.io/global': 'true', 'service.cilium.io/affinity': 'nearest' }, 'service.cilium.io/affinity', /use "local", "remote" or "none"/],
    [{ 'skein.io/global': 'true', 'skein.io/shared': '1' }, 'skein.io/shared', /use "true" or "false"/],
  ])('refuses %o naming %s and the allowed values', (ann, name, msg) => {
    const r = parseGlobalAnnotations(ann);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.annotation).toBe(name);
      expect(r.error).toMatch(msg);
      expect(r.error.startsWith(name)).toBe(true);
    }
  });
  it('says whether the service is global when the error is in another annotation (a typo there is not a withdrawal)', () => {
    expect(parseGlobalAnnotations({ 'skein.io/global': 'ture' })).not.toHaveProperty('global');
    expect(parseGlobalAnnotations({ 'skein.io/global': 'true', 'skein.io/affinity': 'locl' })).toMatchObject({ ok: false, global: true });
    expect(parseGlobalAnnotations({ 'skein.io/affinity': 'locl' })).toMatchObject({ ok: false, global: false });
  });
});
