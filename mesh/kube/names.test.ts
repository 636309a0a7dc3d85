import { describe, expect, it } from 'vitest';
import { PodRef, podPath } from './names.js';

describe('Kubernetes names and API paths', () => {
  it('builds a pod path from valid names', () => {
    expect(podPath('default', 'client-7d9f.x')).toBe('/api/v1/namespaces/default/pods/client-7d9f.x');
  });

  it('refuses names that would lead the path elsewhere or are not names at all', () => {
    for (const [ns, name] of [
      ['victim', '../../default/pods/mine'],
      ['victim', '..'],
      ['default/../victim', 'x'],
      ['..', 'x'],
      ['default', 'x%2f..'],
      ['default', 'X'],
      ['default', ''],
      ['a'.repeat(64), 'x'],
      ['default', 'x?watch=1'],
    ]) {
      expect(() => podPath(ns!, name!), `${ns}/${name}`).toThrow();
    }
  });

  it('checks a pod reference field by field, naming the field', () => {
    const ok = { namespace: 'default', name: 'p', uid: '0f8fad5b-d9cb-469f-a165-70867728950e' };
    expect(PodRef.safeParse(ok).success).toBe(true);
    const bad = PodRef.safeParse({ ...ok, uid: `${ok.uid}/..` });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]?.path).toEqual(['uid']);
    expect(PodRef.safeParse({ ...ok, uid: ok.uid.toUpperCase() }).success).toBe(false);
  });
});
