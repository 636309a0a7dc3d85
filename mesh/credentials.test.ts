import { describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../mtls/x509.js';
import { needsRenewal } from './credentials.js';

describe('identity renewal', () => {
  it('renews with less than half the policy lifetime left, not before', async () => {
    const ca = await createCA({ commonName: 'ca', ttlMs: 3600_000 });
    const cert = await issueCertificate(ca, { commonName: 'x', usage: 'client', ttlMs: 600_000 });
    const now = Date.now();
    expect(needsRenewal(cert.certPem, 600_000, now + 60_000)).toBe(false);
    expect(needsRenewal(cert.certPem, 600_000, now + 301_000)).toBe(true);
  });
  it('renews a certificate that outlives a shortened policy', async () => {
    const ca = await createCA({ commonName: 'ca', ttlMs: 3600_000 });
    const cert = await issueCertificate(ca, { commonName: 'x', usage: 'client', ttlMs: 600_000 });
    expect(needsRenewal(cert.certPem, 12_000)).toBe(true);
  });
  it('renews what it cannot read', () => {
    expect(needsRenewal(undefined, 60_000)).toBe(true);
    expect(needsRenewal('garbage', 60_000)).toBe(true);
  });
});
