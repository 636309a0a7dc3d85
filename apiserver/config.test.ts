import { describe, expect, it } from 'vitest';
import { parseConfig } from './config.js';

const base = ['--cluster-name=east', '--cluster-id=1', '--mesh-etcd=http://127.0.0.1:2379'];

describe('apiserver configuration', () => {
  it('parses flags with defaults', () => {
    expect(parseConfig(base, {})).toMatchObject({ clusterName: 'east', clusterId: 1, meshEtcd: ['http://127.0.0.1:2379'], listen: '0.0.0.0:9876', identityGcGraceMs: 600_000 });
  });
  it('takes the identity GC grace in seconds from the flag or SKEIN_IDENTITY_GC_GRACE', () => {
    expect(parseConfig([...base, '--identity-gc-grace=2'], {}).identityGcGraceMs).toBe(2_000);
    expect(parseConfig(base, { SKEIN_IDENTITY_GC_GRACE: '90' }).identityGcGraceMs).toBe(90_000);
  });
  it('falls back to SKEIN_* environment variables', () => {
    expect(parseConfig([], { SKEIN_CLUSTER_NAME: 'west', SKEIN_CLUSTER_ID: '7', SKEIN_MESH_ETCD: 'https://a:1,https://b:2' })).toMatchObject({ clusterName: 'west', clusterId: 7, meshEtcd: ['https://a:1', 'https://b:2'] });
  });
  it.each([
    [['--cluster-name=east', '--cluster-id=300', '--mesh-etcd=http://x:1'], /^--cluster-id "300": cluster ID must be between 1 and 255$/],
    [['--cluster-name=east', '--cluster-id=one', '--mesh-etcd=http://x:1'], /^--cluster-id "one": /],
    [['--cluster-name=East_1', '--cluster-id=1', '--mesh-etcd=http://x:1'], /^--cluster-name "East_1": cluster name must be 1-32 lowercase/],
    [['--cluster-id=1', '--mesh-etcd=http://x:1'], /^--cluster-name is required \(or set SKEIN_CLUSTER_NAME\)$/],
    [['--cluster-name=east', '--cluster-id=1'], /^--mesh-etcd is required \(or set SKEIN_MESH_ETCD\)$/],
    [['--cluster-name=east', '--cluster-id=1', '--mesh-etcd=localhost:2379'], /^--mesh-etcd "localhost:2379": each --mesh-etcd endpoint must be a URL/],
    [[...base, '--listen=9876'], /^--listen "9876": --listen must be HOST:PORT/],
    [[...base, '--remote-stale-after=0'], /^--remote-stale-after "0": --remote-stale-after must be at least 1 second/],
    [[...base, '--remote-remove-after=5m'], /^--remote-remove-after "5m": give whole seconds, for example 30$/],
    [[...base, '--identity-gc-grace=10m'], /^--identity-gc-grace "10m": give whole seconds, for example 30$/],
    [[...base, '--identity-gc-grace=0'], /^--identity-gc-grace "0": --identity-gc-grace must be at least 1 second$/],
    [[...base, '--identity-gc-grace=999999999'], /^--identity-gc-grace "999999999": --identity-gc-grace must be at most 604800 seconds/],
  ])('refuses %j naming the flag and the fix', (argv, msg) => {
    expect(() => parseConfig(argv, {})).toThrow(msg);
  });
});
