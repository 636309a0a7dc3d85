import { X509Certificate, createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from './x509.js';

describe('x509 issuance', () => {
  it('issues ECDSA P-256 leaves that verify against their CA and carry the requested SANs', async () => {
    const ca = await createCA({ commonName: 'test-ca', ttlMs: 3600_000 });
    const leaf = await issueCertificate(ca, { commonName: 'node-1', organizations: ['system:nodes'], dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], uris: ['spiffe://east.skein/ns/a/sa/b'], usage: 'both', ttlMs: 600_000 });
    const caCert = new X509Certificate(ca.certPem);
    const cert = new X509Certificate(leaf.certPem);
    expect(caCert.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.subject).toContain('CN=node-1');
    expect(cert.subject).toContain('O=system:nodes');
    expect(cert.subjectAltName).toContain('DNS:localhost');
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(cert.subjectAltName).toContain('URI:spiffe://east.skein/ns/a/sa/b');
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.checkPrivateKey(createPrivateKey(leaf.keyPem))).toBe(true);
    expect(new Date(cert.validTo).getTime() - Date.now()).toBeLessThanOrEqual(600_000);
  });

  it('does not verify a leaf against a foreign CA', async () => {
    const [a, b] = [await createCA({ commonName: 'a', ttlMs: 60_000 }), await createCA({ commonName: 'b', ttlMs: 60_000 })];
    const leaf = await issueCertificate(a, { commonName: 'x', usage: 'client', ttlMs: 60_000 });
    expect(new X509Certificate(leaf.certPem).verify(new X509Certificate(b.certPem).publicKey)).toBe(false);
  });
});
