import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCA } from '../../../mtls/x509.js';
import { acceptBundle } from './bundles.js';

const west = await createCA({ commonName: 'west', ttlMs: 86_400_000, uri: 'spiffe://west.skein' });
const raw = (caPem: string, trustDomain = 'west.skein') => JSON.stringify({ trustDomain, caPem, cluster: 'west', own: false });

function tamper(pem: string): string {
  const der = Buffer.from(pem.split('\n').filter((l) => l && !l.startsWith('-----')).join(''), 'base64');
  der[der.length - 20]! ^= 0xff;
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

describe('acceptBundle', () => {
  it('accepts a self-signed CA of the trust domain it is filed under', () => {
    const r = acceptBundle(raw(west.certPem), 'west.skein');
    expect(r.ok && r.bundle.trustDomain).toBe('west.skein');
  });

  it('refuses a tampered certificate, a mislabeled domain, a non-CA, an expired CA and junk, saying why', async () => {
    expect(acceptBundle(raw(tamper(west.certPem)), 'west.skein')).toMatchObject({ ok: false, error: expect.stringMatching(/does not verify|not a certificate/) });
    expect(acceptBundle(raw(west.certPem), 'east.skein')).toMatchObject({ ok: false, error: 'filed under east.skein but names west.skein' });
    expect(acceptBundle(raw(west.certPem, 'east.skein'), 'east.skein')).toMatchObject({ ok: false, error: 'the CA certificate is not for trust domain east.skein' });
    const expired = await createCA({ commonName: 'old', ttlMs: -1000, uri: 'spiffe://west.skein' });
    expect(acceptBundle(raw(expired.certPem), 'west.skein')).toMatchObject({ ok: false, error: expect.stringContaining('expired') });
    expect(acceptBundle('{', 'west.skein')).toMatchObject({ ok: false, error: 'not JSON' });
    expect(acceptBundle(JSON.stringify({ trustDomain: 'west.skein' }), 'west.skein')).toMatchObject({ ok: false, error: expect.stringContaining('caPem') });
  });

  it('serves both CAs of a rotation as one X.509 bundle (DER concatenated), and refuses it whole when one CA fails', async () => {
    const next = await createCA({ commonName: 'west 2', ttlMs: 86_400_000, uri: 'spiffe://west.skein' });
    const r = acceptBundle(raw(west.certPem + next.certPem), 'west.skein');
    if (!r.ok) throw new Error(r.error);
    expect(r.bundle.der).toEqual(Buffer.concat([new X509Certificate(west.certPem).raw, new X509Certificate(next.certPem).raw]));
    expect(r.bundle.cas.map((c) => c.subject)).toEqual(['CN=west', 'CN=west 2']);
    expect(acceptBundle(raw(west.certPem + tamper(next.certPem)), 'west.skein')).toMatchObject({ ok: false, error: expect.stringMatching(/^CA 2 of 2: /) });
  });
});
