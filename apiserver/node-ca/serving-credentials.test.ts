import { X509Certificate } from 'node:crypto';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../../mtls/x509.js';
import { loadNodeCaApi, NODE_CA_NAME, type NodeCAHandlers } from '../../mesh/node-ca/proto.js';
import { SwappableCredentials } from '../../mtls/swappable-credentials.js';

const ca = await createCA({ commonName: 'mesh CA', ttlMs: 86_400_000 });
const client = await issueCertificate(ca, { commonName: 'node-x', usage: 'client', ttlMs: 3600_000 });
const serving = () => issueCertificate(ca, { dnsNames: [NODE_CA_NAME], ipAddresses: ['127.0.0.1'], usage: 'server', ttlMs: 3600_000 });
const first = await serving();
const creds = new SwappableCredentials(ca.certPem, first);
const server = new grpc.Server();
const handlers: Pick<NodeCAHandlers, 'SignJWTSVID'> = { SignJWTSVID: (_call, cb) => cb(null, { spiffe_id: 'spiffe://x.skein/ns/a/sa/b', token: 't', expires_at_unix_ms: 0 }) };
server.addService(loadNodeCaApi().NodeCA.service, handlers);
const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds.serverCredentials, (err, p) => (err ? reject(err) : resolve(p))));
afterAll(() => server.forceShutdown());

/** The serial of the certificate a fresh TLS handshake gets (with a client certificate, as the server requires). */
const handshakeSerial = () =>
  new Promise<string>((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: NODE_CA_NAME, ca: ca.certPem, cert: client.certPem, key: client.keyPem, ALPNProtocols: ['h2'] }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.destroy();
    });
    s.on('error', reject);
  });

const stub = new (loadNodeCaApi().NodeCA)(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(client.keyPem), Buffer.from(client.certPem)), { 'grpc.ssl_target_name_override': NODE_CA_NAME });
afterAll(() => stub.close());
const call = () => new Promise<string>((resolve, reject) => stub.SignJWTSVID({ audience: ['a'] }, (err, res) => (err ? reject(err) : resolve(res!.spiffe_id))));

describe('swappable gRPC server credentials', () => {
  it('serve the first certificate from the start, and a new one to new handshakes while an open channel keeps working', async () => {
    expect(await handshakeSerial()).toBe(new X509Certificate(first.certPem).serialNumber.toUpperCase());
    expect(await call()).toMatch(/^spiffe:/);
    const states: grpc.connectivityState[] = [];
    const channel = stub.getChannel();
    const watch = (s: grpc.connectivityState) => channel.watchConnectivityState(s, Infinity, () => {
      const now = channel.getConnectivityState(false);
      states.push(now);
      if (now !== grpc.connectivityState.SHUTDOWN) watch(now);
    });
    watch(channel.getConnectivityState(false));
    const second = await serving();
    creds.setIdentity(second);
    expect(await handshakeSerial()).toBe(new X509Certificate(second.certPem).serialNumber.toUpperCase());
    for (let i = 0; i < 3; i++) expect(await call()).toMatch(/^spiffe:/);
    expect(states).toEqual([]); // the channel never left READY: the same connection
  });

  it('verify clients against the CA set last: a client of a CA no longer trusted is refused on a new handshake', async () => {
    const other = await createCA({ commonName: 'another mesh CA', ttlMs: 86_400_000 });
    creds.setCa(other.certPem);
    expect(await call()).toMatch(/^spiffe:/); // the open channel is not verified again
    const fresh = new (loadNodeCaApi().NodeCA)(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(client.keyPem), Buffer.from(client.certPem)), { 'grpc.ssl_target_name_override': NODE_CA_NAME });
    try {
      await expect(new Promise((resolve, reject) => fresh.SignJWTSVID({ audience: ['a'] }, { deadline: Date.now() + 3000 }, (err, res) => (err ? reject(err) : resolve(res))))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      fresh.close();
      creds.setCa(ca.certPem);
    }
  });
});
