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
  it('compacts the mesh etcd every 300 s and defragments above 32 MiB free by default; 0 turns compaction off', () => {
    expect(parseConfig(base, {})).toMatchObject({ meshCompactionIntervalMs: 300_000, meshDefragMinFreeBytes: 32 * 1024 * 1024 });
    expect(parseConfig([...base, '--mesh-compaction-interval=0', '--mesh-defrag-min-free=1Gi'], {})).toMatchObject({ meshCompactionIntervalMs: 0, meshDefragMinFreeBytes: 1024 ** 3 });
    expect(parseConfig(base, { SKEIN_MESH_COMPACTION_INTERVAL: '60' }).meshCompactionIntervalMs).toBe(60_000);
  });
  it('flags a silent remote stale after 2 s by default, whole seconds from the flag or SKEIN_REMOTE_STALE_AFTER', () => {
    expect(parseConfig(base, {}).remoteStaleAfterMs).toBe(2_000);
    expect(parseConfig([...base, '--remote-stale-after=1'], {}).remoteStaleAfterMs).toBe(1_000);
    expect(parseConfig(base, { SKEIN_REMOTE_STALE_AFTER: '20' }).remoteStaleAfterMs).toBe(20_000);
  });
  it('takes the cluster pod CIDRs, comma-separated, and refuses one that is not a CIDR, naming the flag', () => {
    expect(parseConfig(base, {}).clusterPodCidrs).toBeUndefined();
    expect(parseConfig([...base, '--cluster-pod-cidr=10.1.0.0/16,10.3.0.0/16'], {}).clusterPodCidrs).toEqual(['10.1.0.0/16', '10.3.0.0/16']);
    expect(parseConfig(base, { SKEIN_CLUSTER_POD_CIDR: '10.2.0.0/16' }).clusterPodCidrs).toEqual(['10.2.0.0/16']);
    expect(() => parseConfig([...base, '--cluster-pod-cidr=10.1.0.0'], {})).toThrow(/^--cluster-pod-cidr "10.1.0.0": --cluster-pod-cidr must be the cluster's pod CIDR/);
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
    [[...base, '--mesh-compaction-interval=5'], /^--mesh-compaction-interval "5": --mesh-compaction-interval must be 0 \(off\) or at least 10 seconds/],
    [[...base, '--mesh-compaction-interval=5m'], /^--mesh-compaction-interval "5m": give whole seconds, for example 30$/],
    [[...base, '--mesh-defrag-min-free=32MB'], /^--mesh-defrag-min-free "32MB": give bytes as a whole number, optionally with Ki, Mi or Gi/],
  ])('refuses %j naming the flag and the fix', (argv, msg) => {
    expect(() => parseConfig(argv, {})).toThrow(msg);
  });
});

describe('remote quota flags', () => {
  it('defaults to REMOTE_QUOTA and takes bytes with Ki/Mi/Gi', () => {
    expect(parseConfig(base, {})).toMatchObject({ remoteMaxKeys: 200_000, remoteMaxBytes: 128 * 1024 * 1024, remoteMaxValueBytes: 512 * 1024 });
    expect(parseConfig([...base, '--remote-max-keys=1000', '--remote-max-bytes=2Gi', '--remote-max-value-bytes=64Ki'], {})).toMatchObject({ remoteMaxKeys: 1000, remoteMaxBytes: 2 * 1024 ** 3, remoteMaxValueBytes: 64 * 1024 });
    expect(parseConfig(base, { SKEIN_REMOTE_MAX_BYTES: '3000000' }).remoteMaxBytes).toBe(3_000_000);
  });
  it.each([
    [[...base, '--remote-max-keys=lots'], /^--remote-max-keys "lots": give a whole number of keys/],
    [[...base, '--remote-max-keys=0'], /^--remote-max-keys "0": --remote-max-keys must be at least 1$/],
    [[...base, '--remote-max-bytes=128MB'], /^--remote-max-bytes "128MB": give bytes as a whole number, optionally with Ki, Mi or Gi/],
    [[...base, '--remote-max-bytes=1Ki'], /^--remote-max-bytes "1Ki": --remote-max-bytes must be at least 1Mi$/],
    [[...base, '--remote-max-value-bytes=1Mi'], /^--remote-max-value-bytes "1Mi": --remote-max-value-bytes must be below 1Mi: a value must fit one write batch/],
  ])('refuses %j naming the flag and the fix', (argv, msg) => {
    expect(() => parseConfig(argv, {})).toThrow(msg);
  });
});
