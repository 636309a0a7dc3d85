// The native SVID path (svid-der.ts) against three independent readers: Node's X509Certificate (OpenSSL),
// @peculiar/x509 and, where installed, the openssl command; and against what @peculiar/x509 issued before.
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate, newKeyAndCsr } from './x509.js';
import { checkX509Svid, signX509Svid } from './svid.js';
import { readCsr } from './svid-der.js';

const TD = 'east.skein';
const ID = `spiffe://${TD}/ns/default/sa/client`;
const ca = await createCA({ commonName: 'east workload CA', ttlMs: 86_400_000, uri: `spiffe://${TD}` });
const caCert = new X509Certificate(ca.certPem);
const caPeculiar = new x509.X509Certificate(ca.certPem);

const dir = mkdtempSync(join(tmpdir(), 'svid-der-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

/** Runs openssl in the test's directory; its stdout and stderr together, and whether it succeeded. */
function openssl(...args: string[]): { ok: boolean; out: string } {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

const pem = (der: Uint8Array, label = 'CERTIFICATE') => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
const hex = (b: ArrayBuffer | Uint8Array) => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');
const pointOf = (cert: X509Certificate) => cert.publicKey.export({ format: 'der', type: 'spki' }).subarray(-65);

const EC256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** A CSR made by @peculiar/x509, with what the native path's own CSRs never carry. */
async function foreignCsr(opts: { keys?: webcrypto.CryptoKeyPair; signingAlgorithm?: object; extensions?: x509.Extension[] } = {}): Promise<Buffer> {
  const keys = opts.keys ?? (await webcrypto.subtle.generateKey(EC256, true, ['sign', 'verify']));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: opts.signingAlgorithm ?? SHA256, extensions: opts.extensions });
  return Buffer.from(csr.rawData);
}
const sanRequest = (...names: x509.JsonGeneralName[]) => new x509.SubjectAlternativeNameExtension(names, false);

describe('native X.509-SVIDs', () => {
  it('are read and verified against the CA by Node, @peculiar/x509 and OpenSSL: one URI SAN, leaf key usages, the CSR key', async () => {
    const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
    const { certDer, expiresAt } = await signX509Svid(ca, { spiffeId: ID, csrDer, ttlMs: 3600_000 });

    const cert = new X509Certificate(certDer);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject ?? '').toBe(''); // Node reads an empty subject as undefined
    expect(cert.issuer).toBe(caCert.subject);
    expect(cert.subjectAltName).toBe(`URI:${ID}`);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    expect(cert.checkPrivateKey(createPrivateKey({ key: keyPkcs8Der, format: 'der', type: 'pkcs8' }))).toBe(true);
    expect(new Date(cert.validTo).getTime()).toBe(expiresAt.getTime());
    expect(checkX509Svid(certDer)).toBe(ID);

    const p = new x509.X509Certificate(certDer);
    expect(await p.verify({ publicKey: caPeculiar, signatureOnly: true })).toBe(true);
    expect(p.serialNumber).toMatch(/^[4-7][0-9a-f]{31}$/);
    const san = p.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.critical).toBe(true);
    expect(san.names.toJSON()).toEqual([{ type: 'url', value: ID }]);
    const bc = p.getExtension(x509.BasicConstraintsExtension)!;
    expect([bc.critical, bc.ca]).toEqual([true, false]);
    const ku = p.getExtension(x509.KeyUsagesExtension)!;
    expect([ku.critical, ku.usages]).toEqual([true, x509.KeyUsageFlags.digitalSignature]);
    const eku = p.getExtension(x509.ExtendedKeyUsageExtension)!;
    expect([eku.critical, eku.usages]).toEqual([false, [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]]);
    expect(p.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toBe(createHash('sha1').update(pointOf(cert)).digest('hex'));
    expect(p.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(caPeculiar.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
  });

  it.skipIf(!hasOpenssl)('verify with openssl for TLS clients and servers, and their keys and CSRs check out there too', async () => {
    const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
    const { certDer } = await signX509Svid(ca, { spiffeId: ID, csrDer });
    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    writeFileSync(join(dir, 'svid.pem'), pem(certDer));
    writeFileSync(join(dir, 'csr.der'), csrDer);
    writeFileSync(join(dir, 'key.der'), keyPkcs8Der);
    for (const purpose of ['sslclient', 'sslserver']) expect(openssl('verify', '-CAfile', 'ca.pem', '-purpose', purpose, 'svid.pem')).toEqual({ ok: true, out: 'svid.pem: OK\n' });
    const text = openssl('x509', '-in', 'svid.pem', '-noout', '-text');
    expect(text.ok).toBe(true);
    for (const line of ['X509v3 Basic Constraints: critical', 'CA:FALSE', 'X509v3 Key Usage: critical', 'Digital Signature', 'TLS Web Server Authentication, TLS Web Client Authentication', 'X509v3 Subject Alternative Name: critical', `URI:${ID}`, 'ASN1 OID: prime256v1', 'Signature Algorithm: ecdsa-with-SHA256']) {
      expect(text.out).toContain(line);
    }
    expect(text.out).not.toMatch(/Key Encipherment|Certificate Sign|CRL Sign/);
    expect(openssl('req', '-inform', 'DER', '-in', 'csr.der', '-noout', '-verify').out).toMatch(/verify OK/);
    expect(openssl('pkey', '-inform', 'DER', '-in', 'key.der', '-noout', '-check').out).toMatch(/Key is valid/);
  });

  it('mean what the @peculiar/x509 SVIDs did: the same extensions in the same order, critical flags and values', async () => {
    const { csrDer } = await newKeyAndCsr();
    const native = new x509.X509Certificate((await signX509Svid(ca, { spiffeId: ID, csrDer })).certDer);
    const before = new x509.X509Certificate(new X509Certificate((await issueCertificate(ca, { uris: [ID], usage: 'both', ttlMs: 3600_000 })).certPem).raw);
    const view = (c: x509.X509Certificate) => c.extensions.map((e) => ({ type: e.type, critical: e.critical, value: e.type === '2.5.29.14' ? 'key-specific' : hex(e.value) }));
    expect(view(native)).toEqual(view(before));
    expect(native.signatureAlgorithm).toEqual(before.signatureAlgorithm);
    expect(hex(native.subjectName.toArrayBuffer())).toBe(hex(before.subjectName.toArrayBuffer()));
    expect(hex(native.issuerName.toArrayBuffer())).toBe(hex(before.issuerName.toArrayBuffer()));
  });

  it('never outlive the CA, are backdated a minute and carry distinct positive 16-byte serials', async () => {
    const shortCa = await createCA({ commonName: 'short', ttlMs: 600_000, uri: `spiffe://${TD}` });
    const { csrDer } = await newKeyAndCsr();
    const t0 = Date.now();
    const { certDer, expiresAt } = await signX509Svid(shortCa, { spiffeId: ID, csrDer, ttlMs: 3600_000 });
    const cert = new X509Certificate(certDer);
    expect(new Date(cert.validTo).getTime()).toBe(new Date(new X509Certificate(shortCa.certPem).validTo).getTime());
    expect(expiresAt.getTime()).toBe(new Date(cert.validTo).getTime());
    expect(Math.abs(new Date(cert.validFrom).getTime() - (t0 - 60_000))).toBeLessThan(2_000);

    const serials = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const { csrDer: csr } = await newKeyAndCsr();
      const c = new X509Certificate((await signX509Svid(ca, { spiffeId: ID, csrDer: csr })).certDer);
      expect(c.verify(caCert.publicKey)).toBe(true);
      expect(c.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
      serials.add(c.serialNumber);
    }
    expect(serials.size).toBe(300);
  });

  it('keys are PKCS#8 byte for byte as OpenSSL writes them, and CSRs read the same to @peculiar/x509', async () => {
    const { csrDer, keyPkcs8Der } = await newKeyAndCsr();
    expect(hex(createPrivateKey({ key: keyPkcs8Der, format: 'der', type: 'pkcs8' }).export({ format: 'der', type: 'pkcs8' }))).toBe(hex(keyPkcs8Der));
    const csr = new x509.Pkcs10CertificateRequest(csrDer);
    expect(await csr.verify()).toBe(true);
    expect(csr.subject).toBe('');
    expect(csr.attributes).toEqual([]);
    expect(hex(readCsr(csrDer).point)).toBe(hex(new Uint8Array(csr.publicKey.rawData).subarray(-65)));
  });
});

describe('the CA refuses', () => {
  it('a CSR whose signature or key was altered, or that is not one DER request', async () => {
    const { csrDer } = await newKeyAndCsr();
    const badSignature = Buffer.from(csrDer);
    badSignature[badSignature.length - 1]! ^= 0x01;
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: badSignature })).rejects.toThrow(/^csr: its signature does not verify/);
    const badPoint = Buffer.from(csrDer);
    badPoint[90]! ^= 0x01; // inside the point's y
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: badPoint })).rejects.toThrow(/^csr: the public key is not a point on P-256/);
    const otherVersion = Buffer.from(csrDer);
    otherVersion.set(Buffer.from('020101', 'hex'), csrDer.indexOf(Buffer.from('3062020100', 'hex')) + 2);
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: otherVersion })).rejects.toThrow(/^csr: version is not 0/);
    for (const broken of [csrDer.subarray(0, -1), Buffer.concat([csrDer, Buffer.of(0)]), Buffer.from('not a csr'), Buffer.alloc(0)]) {
      await expect(signX509Svid(ca, { spiffeId: ID, csrDer: broken })).rejects.toThrow(/^csr: not a DER PKCS#10 request/);
    }
  });

  it('a CSR that requests a second SAN, another name or any other extension; the ID itself is fine', async () => {
    const own = await foreignCsr({ extensions: [sanRequest({ type: 'url', value: ID })] });
    expect(new X509Certificate((await signX509Svid(ca, { spiffeId: ID, csrDer: own })).certDer).subjectAltName).toBe(`URI:${ID}`);
    const twoUris = await foreignCsr({ extensions: [sanRequest({ type: 'url', value: ID }, { type: 'url', value: `spiffe://${TD}/ns/kube-system/sa/admin` })] });
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: twoUris })).rejects.toThrow(/^csr: requests the subjectAltName 2 URI\(s\).*exactly one URI SAN/);
    const otherUri = await foreignCsr({ extensions: [sanRequest({ type: 'url', value: `spiffe://${TD}/ns/kube-system/sa/admin` })] });
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: otherUri })).rejects.toThrow(/exactly one URI SAN, spiffe:\/\/east.skein\/ns\/default\/sa\/client/);
    const dns = await foreignCsr({ extensions: [sanRequest({ type: 'url', value: ID }, { type: 'dns', value: 'evil.example' })] });
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: dns })).rejects.toThrow(/1 other name/);
    const asCa = await foreignCsr({ extensions: [new x509.BasicConstraintsExtension(true, undefined, true)] });
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: asCa })).rejects.toThrow(/^csr: requests extension 2.5.29.19/);
  });

  it('keys other than P-256 and signatures other than ecdsa-with-SHA256, naming them', async () => {
    const rsa = await webcrypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify']);
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: await foreignCsr({ keys: rsa, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } }) })).rejects.toThrow(/^csr: key is RSA; use ECDSA P-256/);
    const p384 = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: await foreignCsr({ keys: p384, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } }) })).rejects.toThrow(/^csr: key is ECDSA on curve 1.3.132.0.34/);
    await expect(signX509Svid(ca, { spiffeId: ID, csrDer: await foreignCsr({ signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } }) })).rejects.toThrow(/^csr: signed with 1.2.840.10045.4.3.3; use ecdsa-with-SHA256/);
  });

  it('an ID without a path or outside the CA trust domain', async () => {
    const { csrDer } = await newKeyAndCsr();
    await expect(signX509Svid(ca, { spiffeId: `spiffe://${TD}`, csrDer })).rejects.toThrow(/has a path/);
    await expect(signX509Svid(ca, { spiffeId: 'spiffe://west.skein/ns/default/sa/client', csrDer })).rejects.toThrow(/not in the CA's trust domain east.skein/);
  });
});
