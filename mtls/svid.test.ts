import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCA, issueCertificate, newKeyAndCsr } from './x509.js';
import { checkX509Svid, jwtBundleOf, signJwtSvid, signX509Svid, validateJwtSvid, workloadSpiffeId } from './svid.js';

const ca = await createCA({ commonName: 'east CA', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
const west = await createCA({ commonName: 'west CA', ttlMs: 86_400_000, uri: 'spiffe://west.skein' });
const id = workloadSpiffeId('east.skein', 'default', 'client');

describe('X.509-SVIDs', () => {
  it('are leaf certificates with one URI SAN, the SPIFFE key usages and the CSR key, signed by the CA', async () => {
    const { csrDer } = await newKeyAndCsr();
    const { certDer, expiresAt } = await signX509Svid(ca, { spiffeId: id, csrDer, ttlMs: 3600_000 });
    expect(checkX509Svid(certDer)).toBe('spiffe://east.skein/ns/default/sa/client');
    const cert = new X509Certificate(certDer);
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(cert.verify(new X509Certificate(west.certPem).publicKey)).toBe(false);
    expect(Math.abs(expiresAt.getTime() - Date.now() - 3600_000)).toBeLessThan(5_000);
  });

  it('refuse a tampered CSR, a non-P-256 key, a bad SPIFFE ID and an expired CA, naming what is wrong', async () => {
    const { csrDer } = await newKeyAndCsr();
    const tampered = Buffer.from(csrDer);
    tampered[tampered.length - 10]! ^= 0xff;
    await expect(signX509Svid(ca, { spiffeId: id, csrDer: tampered })).rejects.toThrow(/csr: /);
    await expect(signX509Svid(ca, { spiffeId: 'https://east.skein/x', csrDer })).rejects.toThrow(/is not a SPIFFE ID/);
    expect(() => workloadSpiffeId('east.skein', 'default', 'a/b')).toThrow(/service account "a\/b"/);
    const expired = await createCA({ commonName: 'old', ttlMs: -1000 });
    await expect(signX509Svid(expired, { spiffeId: id, csrDer })).rejects.toThrow(/expired at .*rotate the cluster CA/);
  });

  it('checkX509Svid rejects certificates that break the SPIFFE rules', async () => {
    const twoUris = await issueCertificate(ca, { uris: [id, 'spiffe://east.skein/other'], usage: 'both', ttlMs: 60_000 });
    expect(() => checkX509Svid(new X509Certificate(twoUris.certPem).raw)).toThrow(/exactly one URI SAN; this has 2/);
    expect(() => checkX509Svid(new X509Certificate(ca.certPem).raw)).toThrow(/has a path|not be a CA/);
  });
});

describe('JWT-SVIDs', () => {
  it('validate against the trust domain bundle and the audience, and not against another', async () => {
    const bundles = new Map([['east.skein', await jwtBundleOf(ca.certPem)], ['west.skein', await jwtBundleOf(west.certPem)]]);
    const { token } = await signJwtSvid(ca, { spiffeId: id, audience: ['spiffe://west.skein/ns/default/sa/server'] });
    const ok = await validateJwtSvid(token, 'spiffe://west.skein/ns/default/sa/server', bundles);
    expect(ok.spiffeId).toBe(id);
    await expect(validateJwtSvid(token, 'other', bundles)).rejects.toThrow(/aud/);
    // Signed by east's key but claiming west's trust domain: west's bundle does not verify it.
    const forged = await signJwtSvid(ca, { spiffeId: 'spiffe://west.skein/ns/default/sa/x', audience: ['a'] });
    await expect(validateJwtSvid(forged.token, 'a', bundles)).rejects.toThrow();
    await expect(validateJwtSvid(token, 'a', new Map())).rejects.toThrow(/no JWT bundle for trust domain east.skein/);
  });
});

describe('JWT bundles while a CA rotates', () => {
  it('hold a key per CA: a token of either CA validates during the overlap, the old one no more once it is retired', async () => {
    const next = await createCA({ commonName: 'east CA 2', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
    const [oldToken, newToken] = await Promise.all([ca, next].map(async (c) => (await signJwtSvid(c, { spiffeId: id, audience: ['west'] })).token));
    const overlap = new Map([['east.skein', await jwtBundleOf(ca.certPem + next.certPem)]]);
    expect(overlap.get('east.skein')!.keys).toHaveLength(2);
    for (const token of [oldToken!, newToken!]) expect((await validateJwtSvid(token, 'west', overlap)).spiffeId).toBe(id);
    const retired = new Map([['east.skein', await jwtBundleOf(next.certPem)]]);
    expect((await validateJwtSvid(newToken!, 'west', retired)).spiffeId).toBe(id);
    await expect(validateJwtSvid(oldToken!, 'west', retired)).rejects.toThrow();
  });
});
