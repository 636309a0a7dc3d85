import { describe, expect, it } from 'vitest';
import { keys, parseExportKey } from './keys.js';
import { decodeValue } from './values.js';

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
});
