import { describe, expect, it } from 'vitest';
import { checkBundle, checkBundleCa, joinPemCertificates, MAX_BUNDLE_CAS, splitPemCertificates } from './trust-bundle.js';
import { createCA } from './x509.js';

describe('checkBundleCa', () => {
  it('accepts a CA of exactly the trust domain and nothing else', async () => {
    const west = await createCA({ commonName: 'w', ttlMs: 3600_000, uri: 'spiffe://west.skein' });
    expect(checkBundleCa(west.certPem, 'west.skein').ok).toBe(true);
    // A peer's CA naming another trust domain (ours) is not that domain's bundle, and vice versa.
    expect(checkBundleCa(west.certPem, 'east.skein')).toEqual({ ok: false, error: 'the CA certificate is not for trust domain east.skein' });
    // A CA without a SPIFFE ID (a mesh CA) is no trust bundle.
    const mesh = await createCA({ commonName: 'mesh', ttlMs: 3600_000 });
    expect(checkBundleCa(mesh.certPem, 'west.skein')).toMatchObject({ ok: false, error: expect.stringContaining('not for trust domain') });
  });
});

describe('checkBundle (one or more CAs: two while a CA rotates)', async () => {
  const [old, next, east] = await Promise.all([
    createCA({ commonName: 'old', ttlMs: 3600_000, uri: 'spiffe://west.skein' }),
    createCA({ commonName: 'new', ttlMs: 3600_000, uri: 'spiffe://west.skein' }),
    createCA({ commonName: 'east', ttlMs: 3600_000, uri: 'spiffe://east.skein' }),
  ]);

  it('accepts both CAs of a rotation and splits and joins them without repeating one', () => {
    const both = joinPemCertificates([old.certPem, next.certPem, old.certPem]);
    expect(splitPemCertificates(both)).toEqual([old.certPem, next.certPem].map((p) => `${p}\n`));
    const r = checkBundle(both, 'west.skein');
    expect(r.ok && r.certs.map((c) => c.subject)).toEqual(['CN=old', 'CN=new']);
  });

  it('refuses the whole bundle when one CA fails, an empty bundle, too many CAs and a repeated one', () => {
    expect(checkBundle(old.certPem + east.certPem, 'west.skein')).toEqual({ ok: false, error: 'CA 2 of 2: the CA certificate is not for trust domain west.skein' });
    expect(checkBundle('', 'west.skein')).toEqual({ ok: false, error: 'the bundle of west.skein holds no certificate' });
    expect(checkBundle('-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n', 'west.skein')).toMatchObject({ ok: false, error: expect.stringContaining('not a certificate') });
    expect(checkBundle(old.certPem.repeat(MAX_BUNDLE_CAS + 1), 'west.skein')).toEqual({ ok: false, error: `the bundle of west.skein holds ${MAX_BUNDLE_CAS + 1} certificates; at most ${MAX_BUNDLE_CAS}` });
    expect(checkBundle(old.certPem + old.certPem, 'west.skein')).toEqual({ ok: false, error: 'the bundle of west.skein holds the same CA twice' });
  });
});
