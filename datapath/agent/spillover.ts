// Spillover (`skein.io/local-min-ready`, affinity `local`): below M ready local backends, local and remote
// backends are used together, so a recovering cluster is not handed all of its traffic the moment its first
// backend is ready (the thundering herd on one pod Cilium's local affinity causes), and a cluster that lost
// part of its capacity sheds the excess. With L ready local backends (0 < L < M) the local share of new
// connections is L/M and the remote share 1 − L/M: it grows as local capacity returns. L ≥ M: local only;
// L = 0: remote only (both as without the annotation).
//
// M is the annotation's count, or its percentage of the service's local endpoints that are not terminating
// (ready or not: pods that crash or are still starting count as missing capacity; pods being replaced do
// not), rounded up: "50%" of 3 endpoints is 2. Endpoints Kubernetes no longer lists (deleted pods) do not
// count, so a count also protects against a scale-down or a kill; a percentage follows the Deployment's size.
//
// The BPF socket LB picks a frontend's slot uniformly (bpf/sock_lb.c), so weights are slots: a backend listed
// k times gets k shares (SocketLb refcounts each listing). Each local backend gets R/g slots and each remote
// one (M − L)/g, g = gcd(R, M − L): the shares are exact, in R·M/g slots. When that is more than
// SPILLOVER_SLOTS (and than L + R), the budget is max(SPILLOVER_SLOTS, 2·(L + R), M) slots (at most 65,535):
// the local share is rounded to whole slots (off by at most 1/(2·budget), under 0.2%), and each side's slots
// are dealt in turn, so backends of one side differ by at most one slot. Every local backend keeps a slot; a
// remote share smaller than one slot per remote backend goes to the first remote backends only (a tiny
// share, e.g. 1/29 over 100 remote backends, would otherwise need thousands of slots).
// The budget is small because spillover takes room in skein_services (262,144 entries for every frontend of
// the node) exactly when many services may be spilling at once (a zone outage).
import type { Backend, LocalMinReady } from '../../mesh/schema/values.js';
import { SOCK_LB_LIMITS } from '../socket-lb.js';

/** Slots a spilling frontend may take beyond one per backend (the exact shares usually fit far fewer). */
export const SPILLOVER_SLOTS = 256;

/** M: the ready local backends below which remote ones join (0: no spillover). */
export function minReadyOf(spec: LocalMinReady | undefined, localBackends: readonly Backend[]): number {
  if (!spec) return 0;
  if ('count' in spec) return spec.count;
  const endpoints = localBackends.filter((b) => !b.terminating).length;
  return Math.max(1, Math.ceil((spec.percent * endpoints) / 100));
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** `n` slots dealt over `items` in turn (each gets ⌊n/len⌋ or one more), grouped by item. */
function deal<T>(items: readonly T[], n: number): T[] {
  return items.flatMap((item, i) => Array<T>(Math.floor(n / items.length) + (i < n % items.length ? 1 : 0)).fill(item));
}

/**
 * The slot list for `local` (L ready local backends) and `remote` backends with min M: the local share L/M
 * when 0 < L < M and both sides have backends; otherwise what affinity `local` uses without spillover.
 */
export function weightedSlots<T>(local: readonly T[], remote: readonly T[], min: number): T[] {
  const l = local.length;
  const r = remote.length;
  if (l >= min || r === 0) return [...local];
  if (l === 0) return [...remote];
  if (l + r >= SOCK_LB_LIMITS.maxBackendsPerFrontend) return [...local, ...remote]; // no room for weights
  const g = gcd(r, min - l);
  const perLocal = r / g;
  const perRemote = (min - l) / g;
  if (l * perLocal + r * perRemote <= Math.max(SPILLOVER_SLOTS, l + r)) return [...deal(local, l * perLocal), ...deal(remote, r * perRemote)];
  const slots = Math.min(SOCK_LB_LIMITS.maxBackendsPerFrontend, Math.max(SPILLOVER_SLOTS, 2 * (l + r), min));
  const localSlots = Math.min(Math.max(Math.round((slots * l) / min), l), slots - 1);
  const remoteSlots = slots - localSlots;
  return [...deal(local, localSlots), ...deal(remote.slice(0, remoteSlots), remoteSlots)];
}
