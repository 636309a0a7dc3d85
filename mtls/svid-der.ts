// The X.509-SVID hot path on Node's native crypto (issue 15): the node's P-256 key and CSR, the CA's check
// of that CSR and the SVID it signs, each built or read as DER by hand for exactly the structures Skein
// issues. Through @peculiar/x509 (an ASN.1 object model on WebCrypto) ~97 % of an issuance was spent
// outside the cryptography; CAs and other certificates, made rarely, still go through it (x509.ts).
//
// What costs beyond the cryptography is two conversions: the new private key to PKCS#8 (the workload needs
// it) and the CSR's point to a key the CA can verify with. Both avoid OpenSSL 3's generic encoders and
// decoders (each costs more than a key generation): the key leaves as SEC1 and is rewrapped here, the
// point enters as JWK. Never JWK out of a key from generateKeyPair[Sync]: Node (20 to at least 24) can
// deadlock there (ExportJWKEcKey holds the key's mutex while allocating; a GC that then finalizes the key's
// generation job takes the same mutex), seen here in about one run in three of 5,000 issuances.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomFillSync, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import {
  bitString,
  bitStringBytes,
  contextTag,
  DerBackWriter,
  DerError,
  DerReader,
  octetString,
  oid,
  readOid,
  readWhole,
  readX509Time,
  sequence,
  TAG,
  tlv,
  tlvEquals,
  unsignedInteger,
  value,
  whole,
  type Tlv,
} from './der.js';

/** A CA as its PEMs: x509.ts's PemPair, restated so that x509.ts can re-export newKeyAndCsr without an import cycle. */
interface CaPems {
  certPem: string;
  keyPem: string;
}

const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  prime256v1: '1.2.840.10045.3.1.7',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

const EC_P256_ALGORITHM = sequence(oid(OID.ecPublicKey), oid(OID.prime256v1));
// RFC 5758: ecdsa-with-SHA256 has no parameters.
const ECDSA_SHA256 = sequence(oid(OID.ecdsaWithSha256));
const INTEGER_0 = unsignedInteger(Buffer.of(0));
const TRUE = tlv(TAG.BOOLEAN, Buffer.of(0xff));
const EMPTY_NAME = sequence();
const V3 = tlv(contextTag(0, true), unsignedInteger(Buffer.of(2)));
const EMPTY_ATTRIBUTES = tlv(contextTag(0, true));
const SAN_OID = oid(OID.subjectAltName);
const SKI_OID = oid(OID.subjectKeyIdentifier);
const EXTENSION_REQUEST_OID = oid(OID.extensionRequest);
const URI_TAG = contextTag(6, false);

const extension = (oidDer: Buffer, critical: boolean, content: Buffer) => (critical ? sequence(oidDer, TRUE, octetString(content)) : sequence(oidDer, octetString(content)));

// What every SVID carries, as today's @peculiar/x509 output did: a critical basicConstraints cA=false (an
// empty SEQUENCE: FALSE is the DEFAULT), a critical keyUsage of digitalSignature alone, both TLS EKUs.
const LEAF_EXTENSIONS = Buffer.concat([
  extension(oid(OID.basicConstraints), true, sequence()),
  extension(oid(OID.keyUsage), true, tlv(TAG.BIT_STRING, Buffer.of(7, 0x80))),
  extension(oid(OID.extKeyUsage), false, sequence(oid(OID.serverAuth), oid(OID.clientAuth))),
]);

const P256_POINT_BYTES = 65;
const P256_SCALAR_BYTES = 32;
const ZERO_POINT = Buffer.alloc(P256_POINT_BYTES);
// An SPKI of an uncompressed P-256 point is this prefix and the point: DER has one encoding.
const P256_SPKI_PREFIX = sequence(EC_P256_ALGORITHM, bitString(ZERO_POINT)).subarray(0, -P256_POINT_BYTES);

// The node's side has a fixed layout, filled in per key: the CSR's certificationRequestInfo (version 0, no
// subject, the key, no attributes) and PKCS#8 as OpenSSL writes it (the curve in the outer algorithm, the
// point in the RFC 5915 ECPrivateKey's [1]).
const CSR_INFO = sequence(INTEGER_0, EMPTY_NAME, P256_SPKI_PREFIX, ZERO_POINT, EMPTY_ATTRIBUTES);
const CSR_INFO_POINT_AT = CSR_INFO.length - EMPTY_ATTRIBUTES.length - P256_POINT_BYTES;
const PKCS8 = sequence(INTEGER_0, EC_P256_ALGORITHM, octetString(sequence(unsignedInteger(Buffer.of(1)), octetString(Buffer.alloc(P256_SCALAR_BYTES)), tlv(contextTag(1, true), bitString(ZERO_POINT)))));
const PKCS8_POINT_AT = PKCS8.length - P256_POINT_BYTES;
const PKCS8_SCALAR_AT = PKCS8_POINT_AT - 5 - P256_SCALAR_BYTES; // before the scalar's end: [1] header, BIT STRING header, unused-bits byte

// A signature's BIT STRING header: ECDSA P-256 signatures in DER are at most 72 bytes (short length form).
const bitStringHeader = (signature: Buffer) => Buffer.from([TAG.BIT_STRING, signature.length + 1, 0]);

/** The private scalar and public point of OpenSSL's SEC1 ECPrivateKey (RFC 5915) for P-256. */
function readSec1(sec1: Buffer): { d: Uint8Array; point: Uint8Array } {
  const ec = DerReader.inside(sec1, readWhole(sec1, TAG.SEQUENCE, 'ECPrivateKey'));
  ec.next(TAG.INTEGER, 'version');
  const d = value(sec1, ec.next(TAG.OCTET_STRING, 'privateKey'));
  if (ec.peekTag() === contextTag(0, true)) ec.next(contextTag(0, true), 'parameters');
  const pub = DerReader.inside(sec1, ec.next(contextTag(1, true), 'publicKey'));
  const point = bitStringBytes(sec1, pub.next(TAG.BIT_STRING, 'publicKey'), 'publicKey');
  if (d.length !== P256_SCALAR_BYTES || point.length !== P256_POINT_BYTES || point[0] !== 4) throw new Error('the new key is not a P-256 key with an uncompressed point');
  return { d, point };
}

/** A new P-256 key and a CSR for it (the key never leaves the node that asks): no subject, no attributes. */
export async function newKeyAndCsr(): Promise<{ keyPkcs8Der: Buffer; csrDer: Buffer }> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  // SEC1, rewrapped below: OpenSSL's PKCS#8 encoder costs seven times as much.
  const { d, point } = readSec1(privateKey.export({ format: 'der', type: 'sec1' }));
  const keyPkcs8Der = Buffer.from(PKCS8);
  keyPkcs8Der.set(d, PKCS8_SCALAR_AT);
  keyPkcs8Der.set(point, PKCS8_POINT_AT);
  const info = Buffer.from(CSR_INFO);
  info.set(point, CSR_INFO_POINT_AT);
  const signature = sign('sha256', info, privateKey);
  return { keyPkcs8Der, csrDer: tlv(TAG.SEQUENCE, info, ECDSA_SHA256, bitStringHeader(signature), signature) };
}

/** What the CA takes from a CSR whose self-signature verified. */
export interface VerifiedCsr {
  /** The uncompressed P-256 point the SVID certifies. */
  point: Buffer;
  /** The URIs of a requested subjectAltName, and how many names of other kinds it had; undefined if none was requested. */
  requestedSan?: { uris: string[]; others: number };
}

function describeKey(buf: Uint8Array, spki: Tlv): string {
  try {
    const r = DerReader.inside(buf, spki);
    const alg = DerReader.inside(buf, r.next(TAG.SEQUENCE, 'algorithm'));
    const algOid = readOid(buf, alg.next(TAG.OID, 'algorithm OID'));
    if (algOid === OID.rsaEncryption) return 'RSA';
    if (algOid !== OID.ecPublicKey) return `of algorithm ${algOid}`;
    if (alg.peekTag() !== TAG.OID) return 'ECDSA with explicit curve parameters';
    const curve = readOid(buf, alg.next(TAG.OID, 'curve'));
    if (curve !== OID.prime256v1) return `ECDSA on curve ${curve}`;
    return 'a P-256 point that is not uncompressed';
  } catch {
    return 'unreadable';
  }
}

function readSanRequest(buf: Uint8Array, values: Tlv): { uris: string[]; others: number } | undefined {
  const set = DerReader.inside(buf, values);
  const exts = DerReader.inside(buf, set.next(TAG.SEQUENCE, 'extensionRequest value'));
  set.finish('extensionRequest values');
  let san: { uris: string[]; others: number } | undefined;
  while (!exts.done) {
    const ext = DerReader.inside(buf, exts.next(TAG.SEQUENCE, 'requested extension'));
    const id = ext.next(TAG.OID, 'requested extension OID');
    if (!tlvEquals(buf, id, SAN_OID)) throw new Error(`csr: requests extension ${readOid(buf, id)}; the CA sets an SVID's extensions itself (a CSR may request only its subjectAltName)`);
    if (ext.peekTag() === TAG.BOOLEAN) ext.next(TAG.BOOLEAN, 'critical');
    const inner = ext.next(TAG.OCTET_STRING, 'subjectAltName value');
    ext.finish('requested extension');
    if (san) throw new Error('csr: requests subjectAltName twice');
    san = { uris: [], others: 0 };
    const gn = readWhole(value(buf, inner), TAG.SEQUENCE, 'subjectAltName');
    const names = DerReader.inside(value(buf, inner), gn);
    while (!names.done) {
      const tag = names.peekTag()!;
      const n = names.next(tag, 'general name');
      if (tag === URI_TAG) san.uris.push(Buffer.from(value(value(buf, inner), n)).toString('latin1'));
      else san.others++;
    }
  }
  return san;
}

/**
 * Reads a DER PKCS#10 request for an ECDSA P-256 key signed with ecdsa-with-SHA256 and checks its
 * self-signature. Its subject is ignored (an SVID names its workload in the URI SAN only); its only allowed
 * attribute is an extensionRequest for a subjectAltName, returned for the caller to hold against the ID.
 */
export function readCsr(csrDer: Uint8Array): VerifiedCsr {
  let info: Tlv, alg: Tlv, spki: Tlv, signature: Uint8Array, requestedSan: VerifiedCsr['requestedSan'];
  let extensionRequests = 0;
  try {
    const outer = DerReader.inside(csrDer, readWhole(csrDer, TAG.SEQUENCE, 'CertificationRequest'));
    info = outer.next(TAG.SEQUENCE, 'certificationRequestInfo');
    alg = outer.next(TAG.SEQUENCE, 'signatureAlgorithm');
    signature = bitStringBytes(csrDer, outer.next(TAG.BIT_STRING, 'signature'), 'signature');
    outer.finish('CertificationRequest');
    const r = DerReader.inside(csrDer, info);
    const version = r.next(TAG.INTEGER, 'version');
    if (!tlvEquals(csrDer, version, INTEGER_0)) throw new Error('csr: version is not 0 (v1)');
    r.next(TAG.SEQUENCE, 'subject');
    spki = r.next(TAG.SEQUENCE, 'subjectPKInfo');
    if (!r.done) {
      const attrs = DerReader.inside(csrDer, r.next(contextTag(0, true), 'attributes'));
      while (!attrs.done) {
        const attr = DerReader.inside(csrDer, attrs.next(TAG.SEQUENCE, 'attribute'));
        const type = attr.next(TAG.OID, 'attribute type');
        if (!tlvEquals(csrDer, type, EXTENSION_REQUEST_OID)) throw new Error(`csr: carries attribute ${readOid(csrDer, type)}; a CSR for an SVID may carry only an extensionRequest`);
        if (++extensionRequests > 1) throw new Error('csr: carries extensionRequest twice');
        requestedSan = readSanRequest(csrDer, attr.next(TAG.SET, 'attribute values'));
        attr.finish('attribute');
      }
    }
    r.finish('certificationRequestInfo');
  } catch (err) {
    if (err instanceof DerError) throw new Error(`csr: not a DER PKCS#10 request (${err.message})`, { cause: err });
    throw err;
  }
  const pointAt = spki.start + P256_SPKI_PREFIX.length;
  if (spki.end - pointAt !== P256_POINT_BYTES || !tlvEquals(csrDer, { ...spki, end: pointAt }, P256_SPKI_PREFIX) || csrDer[pointAt] !== 4) {
    throw new Error(`csr: key is ${describeKey(csrDer, spki)}; use ECDSA P-256 (an uncompressed point)`);
  }
  if (!tlvEquals(csrDer, alg, ECDSA_SHA256)) {
    let name = 'unreadable';
    try {
      name = readOid(csrDer, DerReader.inside(csrDer, alg).next(TAG.OID, 'algorithm'));
    } catch {
      // the message says "unreadable"
    }
    throw new Error(`csr: signed with ${name}; use ecdsa-with-SHA256 (${OID.ecdsaWithSha256})`);
  }
  const point = Buffer.from(csrDer.subarray(pointAt, spki.end));
  let key: KeyObject;
  try {
    // JWK is the cheapest way in (OpenSSL's SPKI decoder costs twice as much, WebCrypto's raw import as much
    // with its argument checks counted), and it refuses a point off the curve.
    key = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') }, format: 'jwk' });
  } catch (err) {
    throw new Error(`csr: the public key is not a point on P-256 (${(err as Error).message})`, { cause: err });
  }
  let ok = false;
  try {
    ok = verify('sha256', whole(csrDer, info), key, signature);
  } catch {
    // a malformed signature: refused below like a wrong one
  }
  if (!ok) throw new Error('csr: its signature does not verify (the request was altered or signed by another key)');
  return { point, requestedSan };
}

/** What issuing under one CA needs, derived once from its PEMs. */
interface SvidCA {
  key: KeyObject;
  /** The CA's subject Name, byte for byte, as every SVID's issuer. */
  issuer: Buffer;
  notAfterMs: number;
  authorityKeyId: Buffer;
  /** The trust domain of the CA's SPIFFE URI SAN, if it has one. */
  trustDomain?: string;
  display: string;
}

function loadSvidCA(ca: CaPems): SvidCA {
  const parsed = new X509Certificate(ca.certPem);
  const der = parsed.raw;
  const cert = DerReader.inside(der, readWhole(der, TAG.SEQUENCE, 'CA certificate'));
  const tbs = DerReader.inside(der, cert.next(TAG.SEQUENCE, 'tbsCertificate'));
  if (tbs.peekTag() === contextTag(0, true)) tbs.next(contextTag(0, true), 'version');
  tbs.next(TAG.INTEGER, 'serialNumber');
  tbs.next(TAG.SEQUENCE, 'signature');
  tbs.next(TAG.SEQUENCE, 'issuer');
  const validity = DerReader.inside(der, tbs.next(TAG.SEQUENCE, 'validity'));
  validity.next(validity.peekTag() ?? 0, 'notBefore');
  const notAfterMs = readX509Time(der, validity.next(validity.peekTag() ?? 0, 'notAfter'), 'notAfter');
  const subject = Buffer.from(whole(der, tbs.next(TAG.SEQUENCE, 'subject')));
  const spki = whole(der, tbs.next(TAG.SEQUENCE, 'subjectPublicKeyInfo'));
  let keyId: Buffer | undefined;
  while (!tbs.done) {
    const tag = tbs.peekTag()!;
    const field = tbs.next(tag, 'optional field');
    if (tag !== contextTag(3, true)) continue;
    const exts = DerReader.inside(der, DerReader.inside(der, field).next(TAG.SEQUENCE, 'extensions'));
    while (!exts.done) {
      const ext = DerReader.inside(der, exts.next(TAG.SEQUENCE, 'extension'));
      const id = ext.next(TAG.OID, 'extension OID');
      if (ext.peekTag() === TAG.BOOLEAN) ext.next(TAG.BOOLEAN, 'critical');
      const v = value(der, ext.next(TAG.OCTET_STRING, 'extension value'));
      if (tlvEquals(der, id, SKI_OID)) keyId = Buffer.from(value(v, readWhole(v, TAG.OCTET_STRING, 'subjectKeyIdentifier')));
    }
  }
  if (spki.length !== P256_SPKI_PREFIX.length + P256_POINT_BYTES || !P256_SPKI_PREFIX.equals(spki.subarray(0, P256_SPKI_PREFIX.length))) {
    throw new Error(`the CA "${parsed.subject}" does not have an ECDSA P-256 key; SVIDs are signed with ecdsa-with-SHA256 on P-256`);
  }
  const caPoint = Buffer.from(spki.subarray(P256_SPKI_PREFIX.length));
  const key = createPrivateKey(ca.keyPem);
  if (!createPublicKey(key).export({ format: 'der', type: 'spki' }).equals(spki)) throw new Error(`the CA key is not the key of the CA certificate "${parsed.subject}"`);
  // RFC 5280 4.2.1.1: the issuer's own subjectKeyIdentifier; else its method (1), SHA-1 of the key's point.
  keyId ??= createHash('sha1').update(caPoint).digest();
  const uris = (parsed.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('URI:spiffe://'));
  const trustDomain = uris.length === 1 ? /^URI:spiffe:\/\/([^/]+)$/.exec(uris[0]!)?.[1] : undefined;
  return {
    key,
    issuer: subject,
    notAfterMs,
    authorityKeyId: extension(oid(OID.authorityKeyIdentifier), false, sequence(tlv(contextTag(0, false), keyId))),
    trustDomain,
    display: parsed.subject.replace(/\n/g, ', '),
  };
}

const cas = new WeakMap<CaPems, SvidCA>();

function svidCA(ca: CaPems): SvidCA {
  let c = cas.get(ca);
  if (!c) {
    c = loadSvidCA(ca);
    cas.set(ca, c);
  }
  return c;
}

/** The trust domain the CA's SPIFFE URI SAN names, if any. */
export const caTrustDomain = (ca: CaPems) => svidCA(ca).trustDomain;

// Serial numbers from a pool: randomBytes costs more per call than 16 bytes are worth.
const SERIAL_BYTES = 16;
const serialPool = Buffer.alloc(SERIAL_BYTES * 256);
let serialAt = serialPool.length;

function serialNumber(): Buffer {
  if (serialAt === serialPool.length) {
    randomFillSync(serialPool);
    serialAt = 0;
  }
  const s = serialPool.subarray(serialAt, (serialAt += SERIAL_BYTES));
  s[0] = (s[0]! & 0x3f) | 0x40; // positive (RFC 5280) and 16 bytes in DER: no leading zero to strip
  return s;
}

const BACKDATE_MS = 60_000;
// Issuance is synchronous from here to the signature, so one scratch buffer serves every call.
const scratch = new DerBackWriter();

/**
 * Signs an X.509-SVID for `point` (from a verified CSR): no subject, `spiffeId` as its one, critical, URI
 * SAN, leaf key usages, and never valid past the CA (a certificate outliving its issuer fails later and
 * more confusingly).
 */
export function issueSvidDer(ca: CaPems, spiffeId: string, point: Uint8Array, ttlMs: number): { certDer: Buffer; expiresAt: Date } {
  const c = svidCA(ca);
  const now = Date.now();
  if (c.notAfterMs <= now) throw new Error(`the CA certificate "${c.display}" expired at ${new Date(c.notAfterMs).toISOString()}: rotate the cluster CA (delete Secret skein-system/skein-ca and reconnect peers)`);
  if (!/^[\x21-\x7e]+$/.test(spiffeId)) throw new Error(`"${spiffeId}" is not printable ASCII, as a URI SAN must be`);
  if (point.length !== P256_POINT_BYTES || point[0] !== 4) throw new Error('an SVID certifies an uncompressed P-256 point');
  const notAfterMs = Math.floor(Math.min(now + ttlMs, c.notAfterMs) / 1000) * 1000;
  // Back to front (DerBackWriter): the TBSCertificate's last field first.
  const w = scratch.reset();
  const tbsEnd = w.mark();
  const extensionsEnd = w.mark();
  let m = w.mark();
  // With no subject, the SAN must be critical (RFC 5280 4.2.1.6).
  w.latin1(spiffeId).wrap(URI_TAG, m).wrap(TAG.SEQUENCE, m).wrap(TAG.OCTET_STRING, m).bytes(TRUE).bytes(SAN_OID).wrap(TAG.SEQUENCE, m);
  w.bytes(c.authorityKeyId);
  // RFC 5280 4.2.1.2 method (1), as before: SHA-1 of the subject key's point.
  m = w.mark();
  w.bytes(createHash('sha1').update(point).digest()).wrap(TAG.OCTET_STRING, m).wrap(TAG.OCTET_STRING, m).bytes(SKI_OID).wrap(TAG.SEQUENCE, m);
  w.bytes(LEAF_EXTENSIONS).wrap(TAG.SEQUENCE, extensionsEnd).wrap(contextTag(3, true), extensionsEnd);
  w.bytes(point).bytes(P256_SPKI_PREFIX).bytes(EMPTY_NAME);
  m = w.mark();
  w.time(notAfterMs).time(now - BACKDATE_MS).wrap(TAG.SEQUENCE, m);
  w.bytes(c.issuer).bytes(ECDSA_SHA256);
  m = w.mark();
  w.bytes(serialNumber()).wrap(TAG.INTEGER, m);
  w.bytes(V3).wrap(TAG.SEQUENCE, tbsEnd);
  const tbs = w.view(tbsEnd);
  const signature = sign('sha256', tbs, c.key);
  return { certDer: tlv(TAG.SEQUENCE, tbs, ECDSA_SHA256, bitStringHeader(signature), signature), expiresAt: new Date(notAfterMs) };
}
