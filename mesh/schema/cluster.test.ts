import { describe, expect, it } from 'vitest';
import { parseClusterRef } from './cluster.js';

describe('cluster refs', () => {
  it('accepts NAME:ID with a DNS-label name and an ID of 1-255', () => {
    expect(parseClusterRef('east:1')).toEqual({ name: 'east', id: 1 });
    expect(parseClusterRef('eu-west-2:255')).toEqual({ name: 'eu-west-2', id: 255 });
  });
  it.each([
    ['east', /expected NAME:ID/],
    ['East:1', /lowercase/],
    ['-east:1', /starting and ending/],
    ['east:0', /between 1 and 255/],
    ['east:256', /between 1 and 255/],
    [`${'a'.repeat(33)}:1`, /1-32/],
  ])('refuses %s naming the rule', (ref, msg) => {
    expect(() => parseClusterRef(ref)).toThrow(msg);
  });
});
