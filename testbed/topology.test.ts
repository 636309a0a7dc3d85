import { describe, expect, it } from 'vitest';
import { containerArgv, imageRepository } from './node-runner/images.js';
import { podMac } from './network.js';
import { fabricNet, nodeNet, podLinkName, podNetnsName, stateTag } from './topology.js';

describe('test bed topology', () => {
  it('gives each node its own pod /24, a /31 to the fabric and interface names under 16 bytes', () => {
    const tag = stateTag('/tmp/x');
    const n = nodeNet(tag, { name: 'east', id: 7 }, 3);
    expect(n).toMatchObject({ name: 'east-node-3', podCidr: '10.7.3.0/24', gateway: '10.7.3.1', nodeIp: '10.7.0.7', fabricIp: '10.7.0.6' });
    for (const name of [n.fabricLink, fabricNet(tag).rootLink, podLinkName('0123abcd-4567-89ef-0123-456789abcdef')]) expect(name.length).toBeLessThan(16);
    expect(podNetnsName(tag, '0123abcd-4567-89ef')).toBe(`sk-${tag}-p-0123abcd4567`);
  });
  it('derives a pod MAC from its IP, so a reused IP keeps valid neighbor entries', () => {
    expect(podMac('10.1.2.3')).toBe('0a:58:0a:01:02:03');
  });
  it('derives a stable tag per state dir', () => {
    expect(stateTag('/tmp/a')).toBe(stateTag('/tmp/a/'));
    expect(stateTag('/tmp/a')).not.toBe(stateTag('/tmp/b'));
  });
  it('refuses node indexes outside 1..127', () => {
    expect(() => nodeNet('abcde', { name: 'e', id: 1 }, 0)).toThrow(/1\.\.127/);
  });
});

describe('test bed images', () => {
  it('maps any registry and tag of skein-echo and skein-client to the built-in programs', () => {
    expect(imageRepository('ghcr.io/skein-mesh/skein-echo:0.1.0')).toBe('skein-echo');
    expect(imageRepository('skein-client@sha256:abc')).toBe('skein-client');
    const argv = containerArgv('example.com/skein-echo:dev', [], ['--x']);
    expect(Array.isArray(argv) && argv.at(-1)).toBe('--x');
  });
  it('names the unsupported image and the supported ones', () => {
    expect(containerArgv('nginx:1.27')).toEqual({ error: expect.stringMatching(/"nginx:1.27" cannot run .* skein-echo, skein-client/) });
  });
});
