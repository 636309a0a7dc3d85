// Waits out an unavailable dependency (the mesh etcd, the API server) instead of crashing: capped backoff,
// with a log line on the first failure and every tenth after it.
export interface RetryOptions {
  /** Sees every failure (counting, showing the last error). */
  onError?: (err: unknown) => void;
  /** Stops retrying (resolving undefined) once this holds: the owner is shutting down. */
  stopped?: () => boolean;
  /** A failure no retry can fix: rethrown at once instead of retried. */
  isFinal?: (err: unknown) => boolean;
}

const RETRY_DELAYS: BackoffOptions = { minMs: 250, maxMs: 5_000 };

export async function retryUntilDone<T>(what: string, fn: () => Promise<T>, log: { warn: (o: object, m: string) => void }, o: RetryOptions & { stopped: () => boolean }): Promise<T | undefined>;
export async function retryUntilDone<T>(what: string, fn: () => Promise<T>, log: { warn: (o: object, m: string) => void }, o?: RetryOptions): Promise<T>;
export async function retryUntilDone<T>(what: string, fn: () => Promise<T>, log: { warn: (o: object, m: string) => void }, o: RetryOptions = {}): Promise<T | undefined> {
  for (let attempt = 1; !o.stopped?.(); attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (o.isFinal?.(err)) throw err;
      o.onError?.(err);
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err: (err as Error).message, attempt }, `${what} failed, retrying`);
      await new Promise((r) => setTimeout(r, backoffDelay(attempt - 1, RETRY_DELAYS)));
    }
  }
  return undefined;
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
