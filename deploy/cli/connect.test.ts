import { describe, expect, it } from 'vitest';
import type { ApiserverStatus } from '../../apiserver/status.js';
import { checkMeshable, overlappingCidrs } from './connect.js';

const st = (cluster: string, clusterId: number, podCidrs: string[]) => ({ cluster, clusterId, podCidrs }) as ApiserverStatus;

describe('skein connect preconditions', () => {
  it('finds overlapping pod CIDRs, including a /16 containing a /24', () => {
    expect(overlappingCidrs(['10.1.0.0/16'], ['10.2.0.0/16'])).toBeUndefined();
    expect(overlappingCidrs(['10.1.0.0/16'], ['10.2.0.0/16', '10.1.7.0/24'])).toEqual(['10.1.0.0/16', '10.1.7.0/24']);
  });
  it.each([
    [st('east', 1, []), st('east', 2, []), /both contexts are cluster "east"/],
    [st('east', 1, []), st('west', 1, []), /both have cluster ID 1: give one another ID/],
    [st('east', 1, ['10.1.1.0/24']), st('west', 2, ['10.1.0.0/16']), /pod CIDRs overlap: east has 10.1.1.0\/24, west has 10.1.0.0\/16/],
  ])('refuses clusters that cannot be meshed', (a, b, msg) => {
    expect(() => checkMeshable(a, b)).toThrow(msg);
  });
  it('accepts distinct clusters', () => {
    expect(() => checkMeshable(st('east', 1, ['10.1.0.0/16']), st('west', 2, ['10.2.0.0/16']))).not.toThrow();
  });
});
