import { describe, expect, it } from 'vitest';
import { nextStep, rotate, workloadCaState } from './ca-rotation.js';
import { splitPemCertificates } from './trust-bundle.js';
import { createCA } from './x509.js';

const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((n) => createCA({ commonName: n, ttlMs: 3600_000, uri: 'spiffe://east.skein' })));
const idle = { 'ca.crt': a!.certPem, 'ca.key': a!.keyPem, 'trust-domain': 'east.skein' };
/** A PEM as bundles hold it (one trailing newline). */
const pem = (p: string) => splitPemCertificates(p)[0]!;
const t = (s: number) => new Date(Date.UTC(2026, 10, 27, 16, 0, s));

describe('workload CA rotation phases', () => {
  it('publishes the new CA before it signs and retires the old one last: old; old + new; new signing + old; new', () => {
    expect(workloadCaState(idle)).toMatchObject({ phase: 'idle', signing: { certPem: a!.certPem }, bundlePem: pem(a!.certPem) });
    const prepared = rotate(idle, 'prepare', t(1), b);
    expect(workloadCaState(prepared)).toMatchObject({ phase: 'prepared', signing: { certPem: a!.certPem }, since: t(1).toISOString() });
    expect(splitPemCertificates(workloadCaState(prepared).bundlePem)).toEqual([a!.certPem, b!.certPem].map(pem));
    const activated = rotate(prepared, 'activate', t(2));
    expect(workloadCaState(activated)).toMatchObject({ phase: 'activated', signing: { certPem: b!.certPem, keyPem: b!.keyPem } });
    expect(splitPemCertificates(workloadCaState(activated).bundlePem)).toEqual([b!.certPem, a!.certPem].map(pem));
    // The old CA's key is gone from the Secret once it no longer signs.
    expect(Object.values(activated)).not.toContain(a!.keyPem);
    const retired = rotate(activated, 'retire', t(3));
    expect(workloadCaState(retired)).toMatchObject({ phase: 'idle', signing: { certPem: b!.certPem }, bundlePem: pem(b!.certPem) });
    expect(retired['trust-domain']).toBe('east.skein');
    // And again, from there.
    expect(splitPemCertificates(workloadCaState(rotate(retired, 'prepare', t(4), c)).bundlePem)).toEqual([b!.certPem, c!.certPem].map(pem));
  });

  it('refuses a step out of order, naming the phase it needs and the phase it found', () => {
    expect(() => rotate(idle, 'activate', t(1))).toThrow('step activate needs phase prepared, and the workload CA is in phase idle');
    expect(() => rotate(idle, 'retire', t(1))).toThrow('step retire needs phase activated, and the workload CA is in phase idle');
    const prepared = rotate(idle, 'prepare', t(1), b);
    expect(() => rotate(prepared, 'prepare', t(2), c)).toThrow(`step prepare needs phase idle, and the workload CA is in phase prepared since ${t(1).toISOString()}`);
    expect(() => rotate(prepared, 'retire', t(2))).toThrow('step retire needs phase activated');
    expect(() => rotate(rotate(prepared, 'activate', t(2)), 'activate', t(3))).toThrow('step activate needs phase prepared, and the workload CA is in phase activated');
    expect(nextStep('idle')).toBeUndefined();
    expect(nextStep('prepared')).toBe('activate');
    expect(nextStep('activated')).toBe('retire');
  });

  it('refuses a Secret that is no rotation state, naming the keys', () => {
    expect(() => workloadCaState({ 'ca.crt': a!.certPem })).toThrow('lacks ca.crt or ca.key');
    expect(() => workloadCaState({ ...idle, 'next.crt': b!.certPem })).toThrow('only one of next.crt and next.key');
    expect(() => workloadCaState({ ...idle, 'next.crt': b!.certPem, 'next.key': b!.keyPem, 'retiring.crt': c!.certPem })).toThrow('both next.crt (prepared) and retiring.crt (activated)');
  });
});
