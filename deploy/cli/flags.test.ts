import { describe, expect, it } from 'vitest';
import { positiveInt } from './flags.js';

describe('positiveInt', () => {
  it('takes whole numbers in range and refuses everything else, naming the flag', () => {
    expect(positiveInt('--timeout', '120', 3600)).toBe(120);
    for (const bad of ['abc', '', '0', '-1', '1.5', '1e3', '3601', ' ', '0x10']) {
      expect(() => positiveInt('--timeout', bad, 3600), bad).toThrow(`--timeout ${bad}: use a whole number from 1 to 3600`);
    }
  });
});
