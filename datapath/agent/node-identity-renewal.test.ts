import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { issueNodeIdentity, issueNodeIdentityFor } from '../../mtls/mesh-identities.js';
import { SwappableCredentials } from '../../mtls/swappable-credentials.js';
import { createCA } from '../../mtls/x509.js';
import { halfLifeAt, NodeIdentityRenewal } from './node-identity-renewal.js';

const CLUSTER = 'rn';
const mesh = await createCA({ commonName: 'mesh CA', ttlMs: 86_400_000 });
const dir = mkdtempSync(join(tmpdir(), 'skein-node-identity-renewal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const log = { info: () => {}, warn: () => {} };

async function setup(name: string, renew: (csrPem: string) => Promise<{ certificatePem: string; caPem: string }>) {
  const first = await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'n1', 3600_000);
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  writeFileSync(files.cert, first.certPem);
  writeFileSync(files.key, first.keyPem);
  const credentials = new SwappableCredentials(mesh.certPem, first);
  return { first, files, credentials, renewal: new NodeIdentityRenewal({ node: 'n1', files, credentials, renew, log }) };
}

describe('node identity renewal (the agent\'s side)', () => {
  it('makes a new key, gets it certified, writes both files and presents the new certificate from then on', async () => {
    const requests: string[] = [];
    const { first, files, credentials, renewal } = await setup('ok', async (csrPem) => {
      requests.push(csrPem);
      return { certificatePem: await issueNodeIdentityFor({ cluster: CLUSTER, mesh }, 'n1', csrPem, 20_000), caPem: mesh.certPem };
    });
    await renewal.renew();
    expect(requests).toHaveLength(1);
    const now = credentials.current;
    expect(now.keyPem).not.toBe(first.keyPem);
    expect(new X509Certificate(now.certPem).serialNumber).not.toBe(new X509Certificate(first.certPem).serialNumber);
    expect(readFileSync(files.cert, 'utf8')).toBe(now.certPem);
    expect(readFileSync(files.key, 'utf8')).toBe(now.keyPem);
    expect(renewal.status()).toMatchObject({ serial: new X509Certificate(now.certPem).serialNumber, renewals: 1, failures: 0 });
    // The next one is due half-way from receipt to notAfter (~10 s), not from the backdated notBefore.
    const due = Date.parse(renewal.status().nextRenewalAt!) - Date.now();
    expect(due).toBeGreaterThan(8_000);
    expect(due).toBeLessThanOrEqual(10_500);
    renewal.stop();
  });

  it('keeps the current identity when the node CA fails or answers with a certificate for another node or key, and retries', async () => {
    const other = await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'n2', 20_000);
    const answers = [
      async () => Promise.reject(new Error('node CA unavailable')),
      async () => ({ certificatePem: other.certPem, caPem: mesh.certPem }), // another node's
      async () => ({ certificatePem: (await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'n1', 20_000)).certPem, caPem: mesh.certPem }), // our node, another key
    ];
    let i = 0;
    const { first, files, credentials, renewal } = await setup('bad', () => answers[i++]!());
    for (const why of [/unavailable/, /not CN=node-n1/, /for another key/]) {
      await renewal.renew();
      expect(renewal.status().lastError).toMatch(why);
    }
    expect(credentials.current).toEqual(first);
    expect(readFileSync(files.cert, 'utf8')).toBe(first.certPem);
    expect(readFileSync(files.key, 'utf8')).toBe(first.keyPem);
    expect(renewal.status()).toMatchObject({ renewals: 0, failures: 3 });
    // Retried with backoff (1 s, 2 s, 4 s, with jitter), not at the certificate's half-life.
    expect(Date.parse(renewal.status().nextRenewalAt!) - Date.now()).toBeLessThanOrEqual(4_000);
    renewal.stop();
  });

  it('waits out a year-long identity: due in six months, not at once (a timer that long would fire at once)', async () => {
    const longCa = await createCA({ commonName: 'mesh CA', ttlMs: 2 * 365 * 86_400_000 });
    let calls = 0;
    const renew = async () => {
      calls++;
      return Promise.reject(new Error('not now'));
    };
    const renewal = new NodeIdentityRenewal({ node: 'n1', files: { cert: join(dir, 'year.crt'), key: join(dir, 'year.key') }, credentials: new SwappableCredentials(longCa.certPem, await issueNodeIdentity({ cluster: CLUSTER, mesh: longCa }, 'n1')), renew, log });
    renewal.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(calls).toBe(0);
    expect(Date.parse(renewal.status().nextRenewalAt!) - Date.now()).toBeGreaterThan(150 * 86_400_000);
    renewal.stop();
  });

  it('is due half-way through the lifetime, counted from receipt when it is known', async () => {
    const c = new X509Certificate((await issueNodeIdentity({ cluster: CLUSTER, mesh }, 'n1', 20_000)).certPem);
    const from = Date.parse(c.validFrom);
    expect(halfLifeAt(c)).toBe(from + (Date.parse(c.validTo) - from) / 2);
    expect(halfLifeAt(c, from + 60_000)).toBe(from + 60_000 + (Date.parse(c.validTo) - from - 60_000) / 2);
  });
});
