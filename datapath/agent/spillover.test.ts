import { describe, expect, it } from 'vitest';
import type { Backend } from '../../mesh/schema/values.js';
import { minReadyOf, SPILLOVER_SLOTS, weightedSlots } from './spillover.js';

const be = (ip: string, extra: Partial<Backend> = {}): Backend => ({ ip, ports: {}, ready: true, serving: true, terminating: false, ...extra });
const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
/** Slots per item, and the local share (items starting with "l"). */
function shares(slots: string[]): { per: Map<string, number>; local: number } {
  const per = new Map<string, number>();
  for (const s of slots) per.set(s, (per.get(s) ?? 0) + 1);
  return { per, local: slots.filter((s) => s.startsWith('l')).length / slots.length };
}

describe('minReadyOf', () => {
  it('is the count, or the percentage of local endpoints not terminating, rounded up (at least 1); 0 without the annotation', () => {
    const four = [be('10.1.0.1'), be('10.1.0.2', { ready: false }), be('10.1.0.3', { ready: false, serving: false }), be('10.1.0.4')];
    expect(minReadyOf(undefined, four)).toBe(0);
    expect(minReadyOf({ count: 3 }, four)).toBe(3);
    expect(minReadyOf({ percent: 50 }, four)).toBe(2);
    expect(minReadyOf({ percent: 50 }, four.slice(0, 3))).toBe(2); // 1.5 → 2
    expect(minReadyOf({ percent: 100 }, [...four, be('10.1.0.5', { ready: false, serving: true, terminating: true })])).toBe(4); // a terminating pod is not capacity to wait for
    expect(minReadyOf({ percent: 1 }, four)).toBe(1);
    expect(minReadyOf({ percent: 50 }, [])).toBe(1);
  });
});

describe('weightedSlots', () => {
  it('L ≥ M: local only; L = 0: remote only; no remote: local only', () => {
    expect(weightedSlots(['l0', 'l1'], ['r0'], 2)).toEqual(['l0', 'l1']);
    expect(weightedSlots([], ['r0', 'r1'], 2)).toEqual(['r0', 'r1']);
    expect(weightedSlots(['l0'], [], 3)).toEqual(['l0']);
  });

  it('0 < L < M: local share exactly L/M, equal slots within each side, in few slots', () => {
    // M = 2, L = 1, R = 2: local 1/2 → the local backend twice, each remote once.
    expect(weightedSlots(['l0'], ['r0', 'r1'], 2)).toEqual(['l0', 'l0', 'r0', 'r1']);
    // M = 4, L = 1, R = 3: local 1/4 → one slot each.
    expect(weightedSlots(['l0'], ['r0', 'r1', 'r2'], 4)).toEqual(['l0', 'r0', 'r1', 'r2']);
    for (let m = 2; m <= 12; m++) {
      for (let l = 1; l < m; l++) {
        for (let r = 1; r <= 12; r++) {
          const slots = weightedSlots(names('l', l), names('r', r), m);
          const { per, local } = shares(slots);
          expect(local, `M=${m} L=${l} R=${r}`).toBeCloseTo(l / m, 10);
          expect(new Set([...per].filter(([k]) => k.startsWith('l')).map(([, n]) => n)).size).toBe(1);
          expect(new Set([...per].filter(([k]) => k.startsWith('r')).map(([, n]) => n)).size).toBe(1);
          expect(per.size).toBe(l + r); // every backend has a slot
          expect(slots.length).toBeLessThanOrEqual(SPILLOVER_SLOTS);
        }
      }
    }
  });

  it('the local share grows as local backends return', () => {
    const remote = names('r', 4);
    const local = names('l', 10);
    const steps = [0, 1, 2, 5, 9, 10].map((l) => shares(weightedSlots(local.slice(0, l), remote, 10)).local);
    expect(steps).toEqual([0, 0.1, 0.2, 0.5, 0.9, 1]);
  });

  it('beyond the slot budget: within 0.5% of L/M, every local backend kept, one side differing by at most one slot', () => {
    for (const [m, l, r] of [
      [100, 97, 7],
      [29, 28, 100],
      [300, 1, 250],
      [1000, 10, 5],
      [96, 95, 300],
    ] as const) {
      const slots = weightedSlots(names('l', l), names('r', r), m);
      const { per, local } = shares(slots);
      const what = `M=${m} L=${l} R=${r}`;
      expect(slots.length, what).toBeLessThanOrEqual(Math.max(SPILLOVER_SLOTS, 2 * (l + r), m));
      expect(Math.abs(local - l / m), what).toBeLessThanOrEqual(0.005);
      expect([...per.keys()].filter((k) => k.startsWith('l'))).toHaveLength(l);
      for (const side of ['l', 'r']) {
        const counts = [...per].filter(([k]) => k.startsWith(side)).map(([, n]) => n);
        expect(Math.max(...counts) - Math.min(...counts), what).toBeLessThanOrEqual(1);
      }
    }
    // A remote share of 1/29 in 256 slots: 9 slots, on the first 9 of the 100 remote backends.
    expect(new Set(weightedSlots(names('l', 28), names('r', 100), 29).filter((s) => s.startsWith('r'))).size).toBe(9);
  });
});
