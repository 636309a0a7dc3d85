import { describe, expect, it } from 'vitest';
import { contextTag, DerBackWriter, DerReader, oid, readOid, readTlv, readWhole, readX509Time, sequence, TAG, tlv, unsignedInteger, x509Time } from './der.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('DER writing', () => {
  it('uses the short length form below 128 bytes and the minimal long form from there', () => {
    expect(hex(tlv(TAG.OCTET_STRING, Buffer.alloc(127))).slice(0, 4)).toBe('047f');
    expect(hex(tlv(TAG.OCTET_STRING, Buffer.alloc(128))).slice(0, 6)).toBe('048180');
    expect(hex(tlv(TAG.OCTET_STRING, Buffer.alloc(256))).slice(0, 8)).toBe('04820100');
    expect(hex(tlv(TAG.OCTET_STRING, Buffer.alloc(65536))).slice(0, 10)).toBe('0483010000');
  });

  it('writes non-negative INTEGERs minimally', () => {
    expect(hex(unsignedInteger(Buffer.of(0)))).toBe('020100');
    expect(hex(unsignedInteger(Buffer.of(0, 0, 5)))).toBe('020105');
    expect(hex(unsignedInteger(Buffer.of(0x80)))).toBe('02020080');
    expect(hex(unsignedInteger(Buffer.of(0, 0x80, 1)))).toBe('0203008001');
  });

  it('encodes OIDs that read back, multi-byte arcs included', () => {
    for (const o of ['1.2.840.10045.4.3.2', '2.5.29.17', '1.3.6.1.5.5.7.3.2', '1.2.840.113549.1.9.14', '2.999.1']) {
      const der = oid(o);
      expect(readOid(der, readWhole(der, TAG.OID, 'oid'))).toBe(o);
    }
    expect(hex(oid('1.2.840.10045.4.3.2'))).toBe('06082a8648ce3d040302');
  });

  it('writes UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280), which read back to the second', () => {
    const cases: [string, string][] = [
      ['2049-12-31T23:59:59.999Z', '170d3439313233313233353935395a'],
      ['2050-01-01T00:00:00.000Z', '180f32303530303130313030303030305a'],
      ['1999-02-03T04:05:06.000Z', '170d3939303230333034303530365a'],
    ];
    for (const [iso, der] of cases) {
      const t = x509Time(Date.parse(iso));
      expect(hex(t)).toBe(der);
      expect(readX509Time(t, readTlv(t, 0), 'time')).toBe(Math.floor(Date.parse(iso) / 1000) * 1000);
      const w = new DerBackWriter(64).reset();
      const end = w.mark();
      expect(hex(w.time(Date.parse(iso)).view(end))).toBe(der);
    }
  });

  it('builds back to front exactly what the forward builder does, long lengths included', () => {
    const w = new DerBackWriter(1024).reset();
    const end = w.mark();
    let m = w.mark();
    w.bytes(Buffer.alloc(300, 7)).wrap(TAG.OCTET_STRING, m).wrap(contextTag(3, true), m);
    w.time(Date.parse('2030-05-06T07:08:09Z'));
    m = w.mark();
    w.latin1('spiffe://a/b').wrap(contextTag(6, false), m);
    w.bytes(oid('2.5.29.17')).wrap(TAG.SEQUENCE, end);
    const forward = sequence(oid('2.5.29.17'), tlv(contextTag(6, false), Buffer.from('spiffe://a/b')), x509Time(Date.parse('2030-05-06T07:08:09Z')), tlv(contextTag(3, true), tlv(TAG.OCTET_STRING, Buffer.alloc(300, 7))));
    expect(hex(w.view(end))).toBe(hex(forward));
    expect(() => new DerBackWriter(8).reset().bytes(Buffer.alloc(9))).toThrow(/more than 8 bytes/);
  });
});

describe('DER reading', () => {
  it('refuses indefinite, non-minimal and overrunning lengths, and trailing bytes', () => {
    expect(() => readTlv(Buffer.from('3080', 'hex'), 0)).toThrow(/indefinite length/);
    expect(() => readTlv(Buffer.from('30817f' + '00'.repeat(127), 'hex'), 0)).toThrow(/non-minimal length/);
    expect(() => readTlv(Buffer.from('3082000100', 'hex'), 0)).toThrow(/non-minimal length/);
    expect(() => readTlv(Buffer.from('3005000000', 'hex'), 0)).toThrow(/runs past/);
    expect(() => readTlv(Buffer.from('30', 'hex'), 0)).toThrow(/truncated/);
    expect(() => readWhole(Buffer.from('300000', 'hex'), TAG.SEQUENCE, 'x')).toThrow(/1 bytes after its end/);
    expect(() => readWhole(Buffer.from('3100', 'hex'), TAG.SEQUENCE, 'x')).toThrow(/expected tag 0x30, found 0x31/);
  });

  it('walks a constructed value field by field and insists on its end', () => {
    const der = sequence(unsignedInteger(Buffer.of(1)), tlv(TAG.NULL));
    const r = DerReader.inside(der, readWhole(der, TAG.SEQUENCE, 'seq'));
    expect(r.next(TAG.INTEGER, 'n').end).toBe(5);
    expect(() => r.finish('seq')).toThrow(/unexpected data after its last field/);
    expect(() => r.next(TAG.INTEGER, 'second')).toThrow(/second: expected tag 0x2, found 0x5/);
    r.next(TAG.NULL, 'null');
    expect(r.done).toBe(true);
    expect(() => r.next(TAG.NULL, 'third')).toThrow(/third is missing/);
  });
});
