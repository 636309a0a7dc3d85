// Workload identities as SPIFFE defines them: X.509-SVIDs (one URI SAN, leaf, digitalSignature, both TLS
// EKUs) signed by the cluster CA from a CSR, and JWT-SVIDs (ES256, signed with the same CA key and
// verifiable with the trust domain's JWT bundle, a JWKS derived from the CA certificate).
import 'reflect-metadata'; // before @peculiar/x509, whichever module is loaded first
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { createLocalJWKSet, decodeJwt, exportJWK, importPKCS8, jwtVerify, SignJWT, type JSONWebKeySet, type JWTPayload } from 'jose';
import * as x509 from '@peculiar/x509';
import { caTrustDomain, issueSvidDer, readCsr } from './svid-der.js';
import type { PemPair } from './x509.js';
import { splitPemCertificates } from './trust-bundle.js';

const DEFAULT_SVID_TTL_MS = 3600_000;
const DEFAULT_JWT_TTL_MS = 300_000;

const SEGMENT = /^[A-Za-z0-9._-]+$/;

export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  for (const [what, v] of [['namespace', namespace], ['service account', serviceAccount]] as const) {
    if (!SEGMENT.test(v)) throw new Error(`${what} "${v}" cannot be a SPIFFE ID path segment`);
  }
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

function trustDomainOfId(spiffeId: string): string {
  const m = /^spiffe:\/\/([a-z0-9._-]+)(\/.*)?$/.exec(spiffeId);
  if (!m) throw new Error(`"${spiffeId}" is not a SPIFFE ID (spiffe://<trust domain>/<path>)`);
  return m[1]!;
}

/**
 * Signs an X.509-SVID for the CSR's key, on the native path (svid-der.ts). The ID is the CA's to give: a CSR
 * may request a subjectAltName only if it is that one URI; the ID must have a path (a leaf names a
 * workload, not its trust domain) and lie in the CA's trust domain when the CA names one.
 */
export async function signX509Svid(ca: PemPair, opts: { spiffeId: string; csrDer: Uint8Array; ttlMs?: number }): Promise<{ certDer: Buffer; expiresAt: Date }> {
  const td = trustDomainOfId(opts.spiffeId);
  if (opts.spiffeId === `spiffe://${td}` || opts.spiffeId === `spiffe://${td}/`) throw new Error(`a leaf SVID's SPIFFE ID has a path; ${opts.spiffeId} has none`);
  const caTd = caTrustDomain(ca);
  if (caTd !== undefined && caTd !== td) throw new Error(`${opts.spiffeId} is not in the CA's trust domain ${caTd}`);
  const csr = readCsr(opts.csrDer);
  if (csr.requestedSan) {
    const { uris, others } = csr.requestedSan;
    if (uris.length + others !== 1 || uris[0] !== opts.spiffeId) {
      throw new Error(`csr: requests the subjectAltName ${uris.length} URI(s) [${uris.join(', ')}] and ${others} other name(s); an X.509-SVID has exactly one URI SAN, ${opts.spiffeId} (leave it out of the CSR or request exactly that)`);
    }
  }
  return issueSvidDer(ca, opts.spiffeId, csr.point, opts.ttlMs ?? DEFAULT_SVID_TTL_MS);
}

/** The SPIFFE rules an X.509-SVID leaf must meet; returns its SPIFFE ID or throws naming the rule broken. */
export function checkX509Svid(certDer: Uint8Array): string {
  const cert = new x509.X509Certificate(certDer);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = san?.names.items.filter((n) => n.type === 'url') ?? [];
  if (uris.length !== 1) throw new Error(`an X.509-SVID has exactly one URI SAN; this has ${uris.length}`);
  const id = uris[0]!.value;
  const td = trustDomainOfId(id);
  if (id === `spiffe://${td}` || id === `spiffe://${td}/`) throw new Error(`a leaf SVID's SPIFFE ID has a path; ${id} has none`);
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca) throw new Error('a leaf SVID must not be a CA (basicConstraints cA=false)');
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (!ku?.critical || !(ku.usages & x509.KeyUsageFlags.digitalSignature)) throw new Error('a leaf SVID has a critical key usage with digitalSignature');
  if (ku.usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) throw new Error('a leaf SVID must not have keyCertSign or cRLSign');
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (eku && !(eku.usages.includes(x509.ExtendedKeyUsage.serverAuth) && eku.usages.includes(x509.ExtendedKeyUsage.clientAuth))) throw new Error('a leaf SVID extended key usage includes both serverAuth and clientAuth');
  if (cert.subject === '' && !san!.critical) throw new Error('a leaf SVID without a subject has a critical SAN');
  return id;
}

/**
 * A trust domain's JWT bundle: the public key of each CA of its bundle as a JWK set (kid: SHA-256 of the
 * SPKI). While a CA rotates the bundle holds both, so a token signed with either key validates.
 */
export async function jwtBundleOf(bundlePem: string): Promise<JSONWebKeySet> {
  const keys = await Promise.all(
    splitPemCertificates(bundlePem).map(async (pem) => {
      const key = new X509Certificate(pem).publicKey;
      return { ...(await exportJWK(key)), kid: keyId(key.export({ format: 'der', type: 'spki' })), use: 'jwt-svid' };
    }),
  );
  return { keys };
}

const keyId = (spkiDer: Buffer) => createHash('sha256').update(spkiDer).digest('base64url');

export async function signJwtSvid(ca: PemPair, opts: { spiffeId: string; audience: string[]; ttlMs?: number }): Promise<{ token: string; expiresAt: Date }> {
  if (opts.audience.length === 0) throw new Error('audience: a JWT-SVID needs at least one audience');
  const key = await importPKCS8(ca.keyPem, 'ES256');
  const kid = keyId(createPublicKey(ca.keyPem).export({ format: 'der', type: 'spki' }));
  const expiresAt = new Date(Date.now() + (opts.ttlMs ?? DEFAULT_JWT_TTL_MS));
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
    .setSubject(opts.spiffeId)
    .setAudience(opts.audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
    .sign(key);
  return { token, expiresAt };
}

/** Validates a JWT-SVID against the bundle of its subject's trust domain; returns its ID and claims. */
export async function validateJwtSvid(token: string, audience: string, bundles: ReadonlyMap<string, JSONWebKeySet>): Promise<{ spiffeId: string; claims: JWTPayload }> {
  let sub: string | undefined;
  try {
    sub = decodeJwt(token).sub;
  } catch (err) {
    throw new Error(`svid: not a JWT (${(err as Error).message})`, { cause: err });
  }
  if (!sub) throw new Error('svid: the JWT has no subject (sub) SPIFFE ID');
  const td = trustDomainOfId(sub);
  const bundle = bundles.get(td);
  if (!bundle) throw new Error(`svid: no JWT bundle for trust domain ${td} (not this cluster's and not a connected one)`);
  // SPIFFE bundles mark keys use "jwt-svid"; jose only picks keys without a use or with use "sig".
  const keys = bundle.keys.filter((k) => !k.use || k.use === 'jwt-svid' || k.use === 'sig').map(({ use: _use, ...k }) => k);
  const { payload } = await jwtVerify(token, createLocalJWKSet({ keys }), { audience, algorithms: ['ES256', 'ES384', 'RS256', 'PS256'] });
  return { spiffeId: sub, claims: payload };
}
