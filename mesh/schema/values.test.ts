import { describe, expect, it } from 'vitest';
import { keys, parseExportKey } from './keys.js';
import { Cidr, decodeValue, Ipv4, parseCidr } from './values.js';

const svc = { cluster: 'east', namespace: 'default', name: 'echo', shared: true, affinity: 'local', clusterIps: ['100.64.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], backends: [] };

describe('export keys and values, validated on read', () => {
  it('parses export and cache keys and rejects anything else', () => {
    expect(parseExportKey(keys.service('east', 'default', 'echo'))).toEqual({ kind: 'services', cluster: 'east', namespace: 'default', name: 'echo' });
    expect(parseExportKey('/skein/v1/cache/west/nodes/n1', 'cache')).toEqual({ kind: 'nodes', cluster: 'west', id: 'n1' });
    expect(parseExportKey('/skein/v1/export/east/services/default')).toBeUndefined();
    expect(parseExportKey('/skein/v2/export/east/config')).toBeUndefined();
  });
  it('accepts a value that matches its schema and its key', () => {
    expect(decodeValue(parseExportKey(keys.service('east', 'default', 'echo'))!, JSON.stringify(svc))).toMatchObject({ ok: true });
  });
  it('rejects a value claiming another cluster than its key', () => {
    const r = decodeValue(parseExportKey(keys.service('west', 'default', 'echo'))!, JSON.stringify(svc));
    expect(r).toEqual({ ok: false, error: 'value does not match its key (services of cluster west)' });
  });
  it('names the field of a schema violation', () => {
    const r = decodeValue(parseExportKey(keys.service('east', 'default', 'echo'))!, JSON.stringify({ ...svc, affinity: 'nearest' }));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(/^affinity: /);
    expect(decodeValue(parseExportKey(keys.node('east', 'n1'))!, '{not json')).toEqual({ ok: false, error: 'value is not JSON' });
  });
  it.each(['1.2.3.256', '01.2.3.4', ' 1.2.3.4', '1.2.3.4 ', '1.2.3', '1.2.3.4.5', '0x1.2.3.4', '1.2.3.-1', '１.2.3.4'])('refuses the IPv4 address %j', (ip) => {
    expect(Ipv4.safeParse(ip).success).toBe(false);
    const r = decodeValue(parseExportKey(keys.service('east', 'default', 'echo'))!, JSON.stringify({ ...svc, backends: [{ ip, ports: {}, ready: true, serving: true, terminating: false }] }));
    expect(r).toMatchObject({ ok: false, error: expect.stringMatching(/^backends\.0\.ip: expected an IPv4 address/) });
  });
  it.each(['0.0.0.0', '10.1.2.3', '255.255.255.255'])('accepts the IPv4 address %j', (ip) => {
    expect(Ipv4.safeParse(ip).success).toBe(true);
  });
  it.each(['1.2.3.4/33', '1.2.3.4/08', '1.2.3.4/', '1.2.3.256/24', '01.2.3.0/24', ' 10.0.0.0/8', '10.0.0.0/8 ', '10.0.0.0', '10.0.0.0/8/8'])('refuses the CIDR %j', (cidr) => {
    expect(Cidr.safeParse(cidr).success).toBe(false);
    const r = decodeValue(parseExportKey(keys.node('east', 'n1'))!, JSON.stringify({ name: 'n1', cluster: 'east', addresses: [], podCidrs: [cidr] }));
    expect(r).toMatchObject({ ok: false, error: expect.stringMatching(/^podCidrs\.0: expected an IPv4 CIDR/) });
  });
  it('accepts CIDRs with prefixes 0-32, host bits allowed (they are masked where membership is tested)', () => {
    expect(parseCidr('0.0.0.0/0')).toEqual({ address: '0.0.0.0', prefix: 0 });
    expect(parseCidr('10.1.2.3/32')).toEqual({ address: '10.1.2.3', prefix: 32 });
    expect(parseCidr('10.1.2.3/24')).toEqual({ address: '10.1.2.3', prefix: 24 });
  });
});
