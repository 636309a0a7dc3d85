// A mesh etcd client given a renewing identity presents, on every new connection, the certificate current at
// that moment (etcd checks a client certificate only at the handshake). A TLS server stands in for etcd: it
// records each handshake's client certificate and drops the connection, so the client dials again.
import { X509Certificate } from 'node:crypto';
import { createServer, type TLSSocket } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { issueCertificate, createCA } from '../mtls/x509.js';
import { SwappableCredentials } from '../mtls/swappable-credentials.js';
import { connectMeshEtcd } from './etcd.js';

const ca = await createCA({ commonName: 'mesh CA', ttlMs: 86_400_000 });
const serving = await issueCertificate(ca, { dnsNames: ['mesh-etcd.t'], usage: 'server', ttlMs: 3600_000 });
const node = () => issueCertificate(ca, { commonName: 'node-n1', usage: 'client', ttlMs: 3600_000 });
const seen: string[] = [];
const sockets = new Set<TLSSocket>();
const server = createServer({ ca: ca.certPem, cert: serving.certPem, key: serving.keyPem, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] }, (s) => {
  seen.push(s.getPeerCertificate().serialNumber.toUpperCase());
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});
const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
afterAll(() => {
  for (const s of sockets) s.destroy();
  return new Promise<void>((resolve) => server.close(() => resolve()));
});

const serial = (pem: string) => new X509Certificate(pem).serialNumber.toUpperCase();
const until = async (what: string, ok: () => boolean) => {
  for (const end = Date.now() + 10_000; !ok(); await new Promise((r) => setTimeout(r, 50))) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
};

describe('a mesh etcd client with a renewing identity', () => {
  it('presents the renewed certificate on the next connection, without a new client', async () => {
    const first = await node();
    const renewing = new SwappableCredentials(ca.certPem, first);
    const client = connectMeshEtcd({ endpoints: [`https://127.0.0.1:${port}`], renewing, serverName: 'mesh-etcd.t', callTimeoutMs: 500 });
    try {
      void client.get('k').string().catch(() => undefined);
      await until('a first handshake', () => seen.length > 0);
      expect(seen).toEqual([serial(first.certPem)]);
      const second = await node();
      renewing.setIdentity(second);
      // The connection goes (etcd restarting); the client dials again with the certificate current now.
      for (const s of sockets) s.destroy();
      void client.get('k').string().catch(() => undefined);
      await until('a handshake after the renewal', () => seen.includes(serial(second.certPem)));
      // Every handshake after the renewal presents the new certificate, none the old one.
      const at = seen.indexOf(serial(second.certPem));
      expect(new Set(seen.slice(0, at))).toEqual(new Set([serial(first.certPem)]));
      expect(new Set(seen.slice(at))).toEqual(new Set([serial(second.certPem)]));
    } finally {
      client.close();
    }
  });
});
