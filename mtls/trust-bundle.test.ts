import { describe, expect, it } from 'vitest';
import { checkBundleCa } from './trust-bundle.js';
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
