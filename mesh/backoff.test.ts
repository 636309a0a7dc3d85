import { afterEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, retryUntilDone } from './backoff.js';

describe('backoffDelay', () => {
  it('doubles from minMs per attempt and stops at maxMs', () => {
    const o = { minMs: 200, maxMs: 5_000 };
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((a) => backoffDelay(a, o))).toEqual([200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]);
  });

  it('matches the formulas it replaced', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      expect(backoffDelay(attempt, { minMs: 200, maxMs: 5_000 })).toBe(Math.min(200 * 2 ** Math.min(attempt, 5), 5_000));
      expect(backoffDelay(attempt, { minMs: 250, maxMs: 5_000 })).toBe(Math.min(250 * 2 ** Math.min(attempt, 5), 5_000));
    }
  });

  it('treats a huge, negative or non-finite attempt sanely', () => {
    const o = { minMs: 100, maxMs: 1_000 };
    expect(backoffDelay(10_000, o)).toBe(1_000);
    expect(backoffDelay(-3, o)).toBe(100);
    expect(backoffDelay(Number.NaN, o)).toBe(100);
    expect(backoffDelay(Number.POSITIVE_INFINITY, o)).toBe(1_000);
  });

  it('jitter shortens a delay by up to that fraction, never lengthens it', () => {
    const o = { minMs: 1_000, maxMs: 8_000, jitter: 0.5 };
    expect(backoffDelay(3, o, () => 0)).toBe(8_000);
    expect(backoffDelay(3, o, () => 1)).toBe(4_000);
    expect(backoffDelay(0, o, () => 0.5)).toBe(750);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, o);
      expect(d).toBeGreaterThanOrEqual(2_000);
      expect(d).toBeLessThanOrEqual(4_000);
    }
  });

  it('without jitter it never draws a random number', () => {
    expect(backoffDelay(1, { minMs: 10, maxMs: 100, jitter: 0 }, () => { throw new Error('drew'); })).toBe(20);
  });
});

describe('retryUntilDone', () => {
  afterEach(() => vi.useRealTimers());
  const quiet = () => {
    const warned: unknown[] = [];
    return { warned, log: { warn: (o: object, m: string) => void warned.push([o, m]) } };
  };

  it('retries a failing step with growing delays until it succeeds, logging the first failure', async () => {
    vi.useFakeTimers();
    const { warned, log } = quiet();
    const seen: unknown[] = [];
    let calls = 0;
    const done = retryUntilDone('a step', async () => {
      if (++calls < 4) throw new Error(`transient ${calls}`);
      return 'ok';
    }, log, { onError: (err) => seen.push((err as Error).message) });
    await vi.advanceTimersByTimeAsync(249);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1 + 500 + 1000);
    await expect(done).resolves.toBe('ok');
    expect(calls).toBe(4);
    expect(seen).toEqual(['transient 1', 'transient 2', 'transient 3']);
    expect(warned).toEqual([[{ err: 'transient 1', attempt: 1 }, 'a step failed, retrying']]);
  });

  it('rethrows a final error at once, and stops retrying when its owner stops', async () => {
    vi.useFakeTimers();
    const { log } = quiet();
    class Refused extends Error {}
    await expect(retryUntilDone('a step', () => Promise.reject(new Refused('never')), log, { isFinal: (e) => e instanceof Refused })).rejects.toThrow('never');
    let stopped = false;
    let calls = 0;
    const done = retryUntilDone('a step', async () => {
      calls++;
      throw new Error('down');
    }, log, { stopped: () => stopped });
    await vi.advanceTimersByTimeAsync(250 + 500);
    stopped = true;
    await vi.advanceTimersByTimeAsync(5_000);
    await expect(done).resolves.toBeUndefined();
    const after = calls;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(after);
  });
});
