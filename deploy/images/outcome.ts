// One line of the client's output: a request and who answered it. The drill reads these from the client
// pod's log, so they are parsed at that edge.
import { z } from 'zod';

export const Outcome = z.object({
  seq: z.number().int().nonnegative(),
  /** When the request started, ms since the epoch (the node's clock). */
  at: z.number(),
  ok: z.boolean(),
  /** How long it took to the answer (or the error). */
  ms: z.number().nonnegative(),
  cluster: z.string().optional(),
  pod: z.string().optional(),
  error: z.string().optional(),
});
export type Outcome = z.infer<typeof Outcome>;

/** The outcome on a log line, or undefined for anything else the pod printed. */
export function parseOutcome(line: string): Outcome | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const r = Outcome.safeParse(JSON.parse(line));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
