// How every zod refusal reads: the first problem, as `field: message`, so an error names what to fix.
import type { z } from 'zod';

/** `prefix` goes before the field's path; `whole` names the value when the problem is the value itself. */
export function firstIssue(err: z.ZodError, prefix = '', whole = 'value'): string {
  const i = err.issues[0];
  return `${prefix}${i?.path.join('.') || whole}: ${i?.message ?? 'invalid'}`;
}
