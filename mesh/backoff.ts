// Waits out an unavailable dependency (the mesh etcd, the API server) instead of crashing: capped backoff,
// with a log line on the first failure and every tenth after it.
export async function retryUntilDone<T>(what: string, fn: () => Promise<T>, log: { warn: (o: object, m: string) => void }, onError?: (err: unknown) => void): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      onError?.(err);
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err: (err as Error).message, attempt }, `${what} failed, retrying`);
      await new Promise((r) => setTimeout(r, backoffDelay(attempt - 1, { minMs: 250, maxMs: 5_000 })));
    }
  }
}

export interface BackoffOptions {
  /** The first delay (attempt 0). */
  minMs: number;
  /** No delay is longer. */
  maxMs: number;
  /**
   * Spreads each delay over [delay × (1 − jitter), delay] (0..1, default 0), so peers that failed together
   * do not retry together.
   */
  jitter?: number;
}

/** How long to wait before retry `attempt` (0-based): `minMs` doubled per attempt, capped at `maxMs`. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  // 2 ** 52 already exceeds any cap; NaN and negatives count as the first attempt.
  const n = attempt > 0 ? Math.min(Math.floor(attempt), 52) : 0;
  const delay = Math.min(o.minMs * 2 ** n, o.maxMs);
  const jitter = Math.min(Math.max(o.jitter ?? 0, 0), 1);
  return jitter > 0 ? delay * (1 - jitter * random()) : delay;
}
