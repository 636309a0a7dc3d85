// Validation of the CLI's flags, shared by every command: a bad value is an error naming the flag and what
// it takes, never a NaN that turns into an endless wait.
export function positiveInt(flag: string, value: string, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1 || n > max) throw new Error(`${flag} ${value}: use a whole number from 1 to ${max}`);
  return n;
}
