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

  it('reads skein.io/local-min-ready as a count of ready local backends or a percentage of local endpoints', () => {
    const spec = (v: string) => parseGlobalAnnotations({ 'skein.io/global': 'true', 'skein.io/affinity': 'local', 'skein.io/local-min-ready': v });
    expect(spec('2')).toEqual({ ok: true, spec: { global: true, shared: true, affinity: 'local', localMinReady: { count: 2 } } });
    expect(spec(' 1 ')).toMatchObject({ spec: { localMinReady: { count: 1 } } });
    expect(spec('65535')).toMatchObject({ spec: { localMinReady: { count: 65535 } } });
    expect(spec('50%')).toMatchObject({ spec: { localMinReady: { percent: 50 } } });
    expect(spec('100%')).toMatchObject({ spec: { localMinReady: { percent: 100 } } });
    expect(parseGlobalAnnotations({ 'skein.io/global': 'true' })).not.toHaveProperty('spec.localMinReady'); // absent: all-or-nothing, as before
  });
  it.each(['0', '-1', '1.5', 'two', '0%', '101%', '50 %', '12.5%', '65536', '', '%'])('refuses skein.io/local-min-ready "%s", naming the annotation and the accepted forms', (v) => {
    const r = parseGlobalAnnotations({ 'skein.io/global': 'true', 'skein.io/local-min-ready': v });
    expect(r).toMatchObject({ ok: false, annotation: 'skein.io/local-min-ready', global: true });
    if (!r.ok) {
      expect(r.error).toBe(
        `skein.io/local-min-ready: "${v.trim()}" is not allowed; use a whole number of ready local backends from 1 to 65535 (for example "2") ` +
          `or a percentage of the service's local endpoints from 1% to 100% (for example "50%")`,
      );
    }
  });
});
