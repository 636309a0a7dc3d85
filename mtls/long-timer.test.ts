import { afterEach, describe, expect, it, vi } from 'vitest';
import { runAt } from './long-timer.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('runAt', () => {
  it('waits half a year (past the 24.8-day limit of one timer) and runs once, at the time', () => {
    vi.useFakeTimers({ now: 0 });
    const fn = vi.fn();
    const halfYear = 182 * 24 * 3600_000;
    runAt(halfYear, fn);
    vi.advanceTimersByTime(halfYear - 1);
    expect(fn).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fn).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(halfYear);
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('runs a time already past at once, and a cancelled one never', () => {
    vi.useFakeTimers({ now: 10_000 });
    const past = vi.fn();
    runAt(5_000, past);
    vi.advanceTimersByTime(0);
    expect(past).toHaveBeenCalledTimes(1);
    const cancelled = vi.fn();
    const cancel = runAt(40 * 24 * 3600_000, cancelled);
    vi.advanceTimersByTime(30 * 24 * 3600_000);
    cancel();
    vi.advanceTimersByTime(30 * 24 * 3600_000);
    expect(cancelled).not.toHaveBeenCalled();
  });
});
