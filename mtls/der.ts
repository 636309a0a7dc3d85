// The little DER that SVID issuance needs, written and read by hand: a generic ASN.1 object model costs
// more per certificate than the cryptography does (issue 15). Only definite, minimal lengths are written
// or accepted, so what is read is exactly what was signed.

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** The tag of [n] EXPLICIT (constructed) or IMPLICIT primitive context-specific fields. */
export const contextTag = (n: number, constructed: boolean) => 0x80 | (constructed ? 0x20 : 0) | n;

function lengthBytes(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

/** One TLV around the concatenation of `content`. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  let len = 0;
  for (const c of content) len += c.length;
  const head = lengthBytes(len);
  const out = Buffer.allocUnsafe(1 + head.length + len);
  out[0] = tag;
  for (let i = 0; i < head.length; i++) out[1 + i] = head[i]!;
  let o = 1 + head.length;
  for (const c of content) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

export const sequence = (...content: Uint8Array[]) => tlv(TAG.SEQUENCE, ...content);
export const octetString = (bytes: Uint8Array) => tlv(TAG.OCTET_STRING, bytes);
/** A BIT STRING of whole bytes (no unused bits), as keys and signatures are. */
export const bitString = (bytes: Uint8Array) => tlv(TAG.BIT_STRING, Buffer.of(0), bytes);

/** A non-negative INTEGER from its big-endian magnitude: leading zeros dropped, a 0x00 added before a high bit. */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return m.length > 0 && m[0]! & 0x80 ? tlv(TAG.INTEGER, Buffer.of(0), m) : tlv(TAG.INTEGER, m.length ? m : Buffer.of(0));
}

export function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0)) throw new Error(`"${dotted}" is not an OID`);
  const bytes: number[] = [];
  const first = arcs[0]! * 40 + arcs[1]!;
  for (const arc of [first, ...arcs.slice(2)]) {
    const sub: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) sub.unshift(0x80 | (v & 0x7f));
    bytes.push(...sub);
  }
  return tlv(TAG.OID, Buffer.from(bytes));
}

const two = (n: number) => (n < 10 ? `0${n}` : `${n}`);

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, UTC. */
export function x509Time(ms: number): Buffer {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  const rest = `${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${two(y % 100)}${rest}`, 'latin1'));
  if (y < 0 || y > 9999) throw new Error(`${d.toISOString()} cannot be an X.509 time`);
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'));
}

/**
 * Builds DER back to front in one reused buffer, so that every length is known by the time its header is
 * written and nothing is allocated per field. Write a structure's fields last to first, then `wrap` it from
 * the `mark()` taken before its last field. A view is valid until the next `reset()`.
 */
export class DerBackWriter {
  private readonly buf: Buffer;
  private pos: number;

  constructor(size = 8192) {
    this.buf = Buffer.alloc(size);
    this.pos = size;
  }

  reset(): this {
    this.pos = this.buf.length;
    return this;
  }

  mark(): number {
    return this.pos;
  }

  private room(n: number): void {
    if (n > this.pos) throw new DerError(`a structure of more than ${this.buf.length} bytes`);
    this.pos -= n;
  }

  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.pos);
    return this;
  }

  latin1(s: string): this {
    this.room(s.length);
    this.buf.write(s, this.pos, s.length, 'latin1');
    return this;
  }

  byte(b: number): this {
    this.room(1);
    this.buf[this.pos] = b;
    return this;
  }

  /** Puts the tag and length in front of everything written since `mark`. */
  wrap(tag: number, mark: number): this {
    let len = mark - this.pos;
    if (len < 0x80) return this.byte(len).byte(tag);
    let n = 0;
    for (; len > 0; len = Math.floor(len / 256), n++) this.byte(len & 0xff);
    return this.byte(0x80 | n).byte(tag);
  }

  /** An X.509 time as x509Time() encodes it, digit by digit (no Date string, no Buffer). */
  time(ms: number): this {
    const d = new Date(ms);
    const y = d.getUTCFullYear();
    if (y < 0 || y > 9999) throw new DerError(`${d.toISOString()} cannot be an X.509 time`);
    const m = this.mark();
    this.byte(0x5a); // Z
    for (const v of [d.getUTCSeconds(), d.getUTCMinutes(), d.getUTCHours(), d.getUTCDate(), d.getUTCMonth() + 1]) this.byte(0x30 + (v % 10)).byte(0x30 + Math.floor(v / 10));
    this.byte(0x30 + (y % 10)).byte(0x30 + (Math.floor(y / 10) % 10));
    const utc = y >= 1950 && y < 2050;
    if (!utc) this.byte(0x30 + (Math.floor(y / 100) % 10)).byte(0x30 + Math.floor(y / 1000));
    return this.wrap(utc ? TAG.UTC_TIME : TAG.GENERALIZED_TIME, m);
  }

  /** What was written since `mark`, as a view into the scratch buffer. */
  view(mark: number): Buffer {
    return this.buf.subarray(this.pos, mark);
  }
}

/** Whether the TLV `t` of `buf` is exactly `expected`, without copying. */
export function tlvEquals(buf: Uint8Array, t: Tlv, expected: Uint8Array): boolean {
  if (t.end - t.start !== expected.length) return false;
  for (let i = 0; i < expected.length; i++) if (buf[t.start + i] !== expected[i]) return false;
  return true;
}

/** One TLV inside `buf`: its tag, where its value starts and where it ends. */
export interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

export class DerError extends Error {}

/** Reads the TLV at `offset`, which must end by `limit`. Single-byte tags only; no indefinite lengths. */
export function readTlv(buf: Uint8Array, offset: number, limit = buf.length): Tlv {
  if (offset + 2 > limit) throw new DerError(`truncated at byte ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tag at byte ${offset}`);
  let len = buf[offset + 1]!;
  let valueStart = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at byte ${offset}`);
    if (n > 4 || valueStart + n > limit) throw new DerError(`bad length at byte ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[valueStart + i]!;
    if (buf[valueStart] === 0 || len < 0x80) throw new DerError(`non-minimal length at byte ${offset}`);
    valueStart += n;
  }
  const end = valueStart + len;
  if (end > limit) throw new DerError(`length at byte ${offset} runs past its container`);
  return { tag, start: offset, valueStart, end };
}

/** Walks the TLVs inside one constructed value, in order. */
export class DerReader {
  private pos: number;
  constructor(
    readonly buf: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
  }

  static inside(buf: Uint8Array, t: Tlv): DerReader {
    return new DerReader(buf, t.valueStart, t.end);
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.buf[this.pos];
  }

  /** The next TLV, which must have `tag`; `what` names it in the error. */
  next(tag: number, what: string): Tlv {
    if (this.done) throw new DerError(`${what} is missing`);
    const t = readTlv(this.buf, this.pos, this.end);
    if (t.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
    this.pos = t.end;
    return t;
  }

  /** Nothing may follow the last expected field. */
  finish(what: string): void {
    if (!this.done) throw new DerError(`${what}: unexpected data after its last field`);
  }
}

/** The TLV that must span all of `buf`. */
export function readWhole(buf: Uint8Array, tag: number, what: string): Tlv {
  const t = readTlv(buf, 0);
  if (t.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
  if (t.end !== buf.length) throw new DerError(`${what}: ${buf.length - t.end} bytes after its end`);
  return t;
}

export const value = (buf: Uint8Array, t: Tlv) => buf.subarray(t.valueStart, t.end);
export const whole = (buf: Uint8Array, t: Tlv) => buf.subarray(t.start, t.end);

/** The bytes of a BIT STRING that has no unused bits. */
export function bitStringBytes(buf: Uint8Array, t: Tlv, what: string): Uint8Array {
  if (t.end - t.valueStart < 1 || buf[t.valueStart] !== 0) throw new DerError(`${what}: not a whole-byte BIT STRING`);
  return buf.subarray(t.valueStart + 1, t.end);
}

/** Milliseconds since the epoch of a UTCTime or GeneralizedTime in RFC 5280's form (…Z, whole seconds). */
export function readX509Time(buf: Uint8Array, t: Tlv, what: string): number {
  const s = Buffer.from(value(buf, t)).toString('latin1');
  const m = t.tag === TAG.UTC_TIME ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : t.tag === TAG.GENERALIZED_TIME ? /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  if (!m) throw new DerError(`${what}: "${s}" is not an X.509 time`);
  let y = Number(m[1]);
  if (t.tag === TAG.UTC_TIME) y += y < 50 ? 2000 : 1900;
  return Date.UTC(y, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** The dotted form of an OID's value, for messages. */
export function readOid(buf: Uint8Array, t: Tlv): string {
  const arcs: number[] = [];
  let v = 0;
  for (let i = t.valueStart; i < t.end; i++) {
    v = v * 128 + (buf[i]! & 0x7f);
    if (!(buf[i]! & 0x80)) {
      arcs.push(v);
      v = 0;
    }
  }
  if (arcs.length === 0) return '(empty OID)';
  const first = arcs[0]!;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}
