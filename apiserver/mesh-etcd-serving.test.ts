import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureClusterCA } from '../mtls/cluster-ca.js';
import { issueMeshEtcdServer } from '../mtls/mesh-identities.js';
import { keepMeshEtcdServing } from './mesh-etcd-serving.js';

const secrets = new Map<string, Record<string, string>>();
const ca = await ensureClusterCA({ get: async (n) => secrets.get(n), create: async (n, d) => (secrets.has(n) ? false : (secrets.set(n, d), true)) }, 'east');
const dir = mkdtempSync(join(tmpdir(), 'mesh-etcd-serving-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const log = { info: () => {}, warn: () => {} };
const read = () => ({ cert: new X509Certificate(readFileSync(join(dir, 'server.crt'))), key: readFileSync(join(dir, 'server.key'), 'utf8') });

describe('the mesh etcd serving certificate', () => {
  it('is renewed at half-life in the files etcd reads, with the installer’s key kept, for the addresses etcd is reached at', async () => {
    // The installer named the pod IP (10.244.1.7), which no endpoint of this process mentions: renewals keep it.
    const installed = await issueMeshEtcdServer(ca, ['10.0.0.9', '10.244.1.7']);
    writeFileSync(join(dir, 'server.crt'), installed.certPem);
    writeFileSync(join(dir, 'server.key'), installed.keyPem);
    const kept = await keepMeshEtcdServing({ dir, ca, endpoints: ['https://10.0.0.9:2379', 'https://203.0.113.7:32379', 'https://mesh.example:2379'], ttlMs: 2400, log });
    try {
      const first = read();
      expect(first.key).toBe(installed.keyPem);
      expect(first.cert.serialNumber).not.toBe(new X509Certificate(installed.certPem).serialNumber);
      expect(first.cert.checkPrivateKey(createPrivateKey(first.key))).toBe(true);
      expect(first.cert.subjectAltName).toContain('IP Address:10.0.0.9');
      expect(first.cert.subjectAltName).toContain('IP Address:203.0.113.7');
      expect(first.cert.subjectAltName).toContain('IP Address:127.0.0.1');
      expect(first.cert.subjectAltName).toContain('IP Address:10.244.1.7');
      expect(first.cert.subjectAltName).toContain('DNS:mesh-etcd.east');
      expect(first.cert.verify(new X509Certificate(ca.mesh.certPem).publicKey)).toBe(true);
      // Renewed at half of 2.4 s (polled, bounded: the test asserts what happens, not how fast).
      for (const deadline = Date.now() + 10_000; kept.renewals === 0 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
      const second = read();
      expect(kept.renewals).toBe(1);
      expect(second.cert.serialNumber).not.toBe(first.cert.serialNumber);
      expect(second.cert.subjectAltName).toContain('IP Address:10.244.1.7');
      expect(second.key).toBe(installed.keyPem); // a reader between the two files still gets a matching pair
      expect(second.cert.serialNumber).toBe(kept.current.serial);
    } finally {
      kept.stop();
    }
  });
});
