import { describe, expect, it } from 'vitest';
import { waitAtMost } from './wait-at-most.js';

describe('waitAtMost', () => {
  it('returns when the promise settles, failure included, and at the bound when it never does', async () => {
    await expect(waitAtMost(Promise.resolve(1), 10_000)).resolves.toBeUndefined();
    await expect(waitAtMost(Promise.reject(new Error('gone')), 10_000)).resolves.toBeUndefined();
    await expect(waitAtMost(undefined, 10_000)).resolves.toBeUndefined();
    const t0 = Date.now();
    await waitAtMost(new Promise(() => {}), 50);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
  });
});
