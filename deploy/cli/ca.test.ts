import { describe, expect, it } from 'vitest';
import type { ApiserverStatus } from '../../mesh/status.js';
import { bundleLag, planSteps, svidLag } from './ca.js';

const o = { context: 'skein-east' };

describe('skein ca rotate: which steps a run takes', () => {
  it('runs every step from idle, the rest with --resume, one with --step', () => {
    expect(planSteps('idle', undefined, o)).toEqual(['prepare', 'activate', 'retire']);
    expect(planSteps('prepared', 't', { ...o, resume: true })).toEqual(['activate', 'retire']);
    expect(planSteps('activated', 't', { ...o, resume: true })).toEqual(['retire']);
    expect(planSteps('idle', undefined, { ...o, step: 'prepare' })).toEqual(['prepare']);
    expect(planSteps('prepared', 't', { ...o, step: 'activate' })).toEqual(['activate']);
  });

  it('refuses a second rotation, --resume without one, a step out of order and an unknown step, naming the fix', () => {
    expect(() => planSteps('prepared', '2026-11-27T16:00:00.000Z', o)).toThrow(
      "a rotation of skein-east's workload CA is already in progress (phase prepared since 2026-11-27T16:00:00.000Z): run `skein ca rotate --context skein-east --resume` to finish it",
    );
    expect(() => planSteps('idle', undefined, { ...o, resume: true })).toThrow("--resume: no rotation of skein-east's workload CA is in progress: run `skein ca rotate --context skein-east` to start one");
    expect(() => planSteps('idle', undefined, { ...o, step: 'retire' })).toThrow(/--step retire: the workload CA of skein-east is in phase idle, and retire follows activated: run `skein ca rotate --context skein-east --step prepare` next/);
    expect(() => planSteps('prepared', 't', { ...o, step: 'retire' })).toThrow(/run `skein ca rotate --context skein-east --step activate` next/);
    expect(() => planSteps('idle', undefined, { ...o, step: 'rotate' })).toThrow('--step rotate: not a step; use one of prepare, activate, retire (in that order)');
  });
});

const agent = (node: string, workload?: { bundles: Record<string, string[]>; svidSigners: Record<string, number> }) => ({ node, workload }) as ApiserverStatus['agents'][number];
const status = (...agents: ApiserverStatus['agents']) => ({ cluster: 'west', agents }) as ApiserverStatus;

describe('skein ca rotate: what it waits for', () => {
  it('waits until every agent with a Workload API serves the bundle, in any order', () => {
    const s = status(agent('n1', { bundles: { 'east.skein': ['B', 'A'] }, svidSigners: {} }), agent('n2'));
    expect(bundleLag(s, 'east.skein', ['A', 'B'])).toBeUndefined();
    expect(bundleLag(status(agent('n1', { bundles: { 'east.skein': ['A'] }, svidSigners: {} })), 'east.skein', ['A', 'B'])).toBe('west: n1 serves [A]');
    expect(bundleLag(status(agent('n1', { bundles: {}, svidSigners: {} })), 'east.skein', ['B'])).toBe('west: n1 serves [nothing]');
  });

  it('waits until no agent holds an SVID of another CA (nor of none it knows)', () => {
    expect(svidLag(status(agent('n1', { bundles: {}, svidSigners: { B: 3 } })), 'B')).toBeUndefined();
    expect(svidLag(status(agent('n1', { bundles: {}, svidSigners: { A: 1, B: 2 } })), 'B')).toBe('west: n1 holds SVIDs of A, B');
    expect(svidLag(status(agent('n1', { bundles: {}, svidSigners: { unknown: 1 } })), 'B')).toBe('west: n1 holds SVIDs of unknown');
  });
});
