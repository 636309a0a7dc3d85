// A timer for certificate lifetimes: Node fires a setTimeout longer than 2^31-1 ms (24.8 days) at once (with
// a warning), so a year-long certificate due at half-life would be "due" immediately, in a loop.

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Runs `fn` at `atMs` (epoch ms), waiting in steps a timer can take; unref'd. Returns how to cancel it. */
export function runAt(atMs: number, fn: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  let cancelled = false;
  const wait = () => {
    if (cancelled) return;
    const left = atMs - Date.now();
    timer = left > MAX_TIMER_MS ? setTimeout(wait, MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    timer.unref();
  };
  wait();
  return () => {
    cancelled = true;
    clearTimeout(timer);
  };
}
