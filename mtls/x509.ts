// X.509 issuance on Node's WebCrypto through @peculiar/x509: ECDSA P-256 by default (node-forge signs only
// RSA). Used for the certificates Skein makes rarely: CAs, the local test bed's Kubernetes PKI and the mesh
// etcd's transport identities. Workload SVIDs, made per pod and renewed at half-life, and their CSRs take
// the native DER path of svid-der.ts.
import 'reflect-metadata';
import { createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// Node's webcrypto is the standard Crypto, but its TypeScript type differs from the DOM's that the library names.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface PemPair {
  certPem: string;
  keyPem: string;
}

type CertUsage = 'server' | 'client' | 'both';

export interface CertSpec {
  commonName?: string;
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  uris?: string[];
  usage: CertUsage;
  ttlMs: number;
  /** Backdating tolerates clock skew between the issuer and verifiers. */
  backdateMs?: number;
}

interface LoadedCA {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

function subjectName(commonName: string | undefined, organizations: string[] = []): x509.JsonName {
  const name: x509.JsonName = [];
  for (const o of organizations) name.push({ O: [o] });
  if (commonName) name.push({ CN: [commonName] });
  return name;
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive, as RFC 5280 requires
  return bytes.toString('hex');
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
}

async function importKeyPem(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, EC_P256, true, ['sign']);
}

async function newKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
}

/** A self-signed CA. `uri` adds a URI SAN (a SPIFFE trust domain's CA carries `spiffe://<td>`). */
export async function createCA(opts: { commonName: string; ttlMs: number; uri?: string }): Promise<PemPair> {
  const keys = await newKeyPair();
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (opts.uri) extensions.push(new x509.SubjectAlternativeNameExtension([{ type: 'url', value: opts.uri }], false));
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: subjectName(opts.commonName),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + opts.ttlMs),
    signingAlgorithm: EC_P256,
    keys,
    extensions,
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

async function loadCA(ca: PemPair): Promise<LoadedCA> {
  return { cert: new x509.X509Certificate(ca.certPem), key: await importKeyPem(ca.keyPem) };
}

const caCache = new WeakMap<PemPair, Promise<LoadedCA>>();

function loadedCA(ca: PemPair): Promise<LoadedCA> {
  let loaded = caCache.get(ca);
  if (!loaded) {
    loaded = loadCA(ca);
    caCache.set(ca, loaded);
  }
  return loaded;
}

/** Issues a leaf certificate signed by `ca`, with a new key pair. */
export async function issueCertificate(ca: PemPair, spec: CertSpec): Promise<PemPair> {
  const keys = await newKeyPair();
  const cert = await signLeaf(ca, spec, keys.publicKey);
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/** A new key and a PKCS#10 request for it naming `commonName` alone (the key stays with the caller). */
export async function newKeyAndRequest(commonName: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await newKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: subjectName(commonName), keys, signingAlgorithm: EC_P256 });
  return { keyPem: await exportKeyPem(keys.privateKey), csrPem: csr.toString('pem') };
}

/**
 * Issues a leaf for the key of someone else's PKCS#10 request, after checking it: it parses, its signature
 * proves possession of the key, the key is ECDSA P-256, and its subject is exactly CN=`commonName`. What
 * the certificate says comes from `spec`, never from the request. Throws saying what is wrong.
 */
export async function issueForRequest(ca: PemPair, csrPem: string, commonName: string, spec: CertSpec): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new Error(`the certificate request does not parse: ${(err as Error).message}`, { cause: err });
  }
  if (!(await csr.verify())) throw new Error('the certificate request\'s signature does not verify (no proof of the key)');
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') throw new Error(`the certificate request's key is ${algorithm.name ?? '?'} ${algorithm.namedCurve ?? ''}: only ECDSA P-256 keys are certified`.replace(/ +:/, ':'));
  if (csr.subject !== `CN=${commonName}`) throw new Error(`the certificate request names "${csr.subject}", not CN=${commonName}`);
  const publicKey = await webcrypto.subtle.importKey('spki', csr.publicKey.rawData, EC_P256, true, ['verify']);
  return (await signLeaf(ca, spec, publicKey)).toString('pem');
}

/**
 * Issues a leaf certificate for an existing key (PKCS#8 PEM): a renewal that a reader of separate certificate
 * and key files can never see half-done (the key it reads always matches either certificate).
 */
export async function issueCertificateForKey(ca: PemPair, spec: CertSpec, keyPem: string): Promise<PemPair> {
  const spki = createPublicKey(keyPem).export({ format: 'der', type: 'spki' });
  const publicKey = await webcrypto.subtle.importKey('spki', spki, EC_P256, true, ['verify']);
  return { certPem: (await signLeaf(ca, spec, publicKey)).toString('pem'), keyPem };
}

/**
 * Signs a leaf for `publicKey`. Never outlives the CA: a certificate valid past its issuer would fail
 * verification anyway, later and more confusingly.
 */
async function signLeaf(ca: PemPair, spec: CertSpec, publicKey: CryptoKey): Promise<x509.X509Certificate> {
  const { cert: caCert, key: caKey } = await loadedCA(ca);
  const now = Date.now();
  if (caCert.notAfter.getTime() <= now) throw new Error(`the CA certificate "${caCert.subject}" expired at ${caCert.notAfter.toISOString()}: rotate the cluster CA (delete Secret skein-system/skein-ca and reconnect peers)`);
  const ekus: string[] = [];
  if (spec.usage !== 'client') ekus.push(x509.ExtendedKeyUsage.serverAuth);
  if (spec.usage !== 'server') ekus.push(x509.ExtendedKeyUsage.clientAuth);
  const sans: x509.JsonGeneralNames = [
    ...(spec.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(spec.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(spec.uris ?? []).map((value) => ({ type: 'url' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(ekus, false),
    await x509.SubjectKeyIdentifierExtension.create(publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(caCert),
  ];
  // With no subject, the SAN must be critical (RFC 5280 4.2.1.6).
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans, !spec.commonName && !spec.organizations?.length));
  return x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: subjectName(spec.commonName, spec.organizations),
    issuer: caCert.subject,
    notBefore: new Date(now - (spec.backdateMs ?? 60_000)),
    notAfter: new Date(Math.min(now + spec.ttlMs, caCert.notAfter.getTime())),
    signingAlgorithm: EC_P256,
    publicKey,
    signingKey: caKey,
    extensions,
  });
}

// The node's side of an SVID lives with the CA's (svid-der.ts); its callers have always imported it from here.
export { newKeyAndCsr } from './svid-der.js';

/** The SPKI public key of a private key, as PEM (what kube-apiserver's --service-account-key-file takes). */
export function publicKeyPem(keyPem: string): string {
  return createPublicKey(keyPem).export({ format: 'pem', type: 'spki' }) as string;
}

/** A fresh ECDSA P-256 private key, PKCS#8 PEM. */
export async function newPrivateKeyPem(): Promise<string> {
  return exportKeyPem((await newKeyPair()).privateKey);
}
