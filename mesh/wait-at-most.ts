// Shutdown and cancellation steps that must not hang on a peer that went away.

/** Waits for `p` to settle, but at most `ms` (its failure ignored); the timer never keeps the process alive. */
export function waitAtMost(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)).unref());
  return Promise.race([Promise.resolve(p).then(() => {}, () => {}), timeout]).finally(() => clearTimeout(timer));
}
