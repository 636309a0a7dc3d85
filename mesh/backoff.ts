// Waits out an unavailable dependency (the mesh etcd, the API server) instead of crashing: capped backoff,
// with a log line on the first failure and every tenth after it.
export async function retryUntilDone<T>(what: string, fn: () => Promise<T>, log: { warn: (o: object, m: string) => void }, onError?: (err: unknown) => void): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      onError?.(err);
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err: (err as Error).message, attempt }, `${what} failed, retrying`);
      await new Promise((r) => setTimeout(r, Math.min(250 * attempt, 5_000)));
    }
  }
}
