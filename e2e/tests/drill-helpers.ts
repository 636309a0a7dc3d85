// For `skein drill` on the test bed, shared by the drill benchmark and the failover e2e cases: the test bed's
// blackhole handed to runDrill, and checks of a drill report against the outcomes it was made from and
// against an independent client's. The checks return what is wrong (no vitest here: the benchmark runs
// them too), so a test asserts `toEqual([])` and sees every problem at once.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Outcome } from '../../deploy/images/outcome.js';
import type { DrillReport } from '../../deploy/drill/report.js';
import type { NetFaults } from '../../deploy/drill/run.js';
import { openNetFaults } from '../../testbed/faults.js';
import { inNetns } from '../../testbed/netns.js';

/** runDrill's netFaultsFor on the test bed in `stateDir` (as `skein drill` finds it from the kubeconfig). */
export const testbedFaults =
  (stateDir: string) =>
  (kc: KubeConfig): Promise<NetFaults | undefined> =>
    Promise.resolve(openNetFaults(kc, [stateDir]));

/** The fault, epoch ms (the client node's clock). */
const faultAbs = (r: DrillReport) => r.timeline.start + r.timeline.faultAt;

/**
 * Whether every lost request was sent inside the fault's window: from one interval before the fault (a
 * request in flight) to one interval after the later of failover and ejection.
 */
export function lossConfined(r: DrillReport): boolean {
  if (!r.lossWindow) return true;
  const end = Math.max(r.failoverMs ?? Infinity, r.ejectedAfterMs ?? 0);
  // Sent after the drill struck (the fault may begin a little before its moment is taken), up to the failover.
  return r.lossWindow.from >= r.timeline.takenAt - r.timeline.faultAt - r.intervalMs && r.lossWindow.to <= end + r.intervalMs;
}

/**
 * What in the report disagrees with the outcomes it was made from (runDrill's onOutcomes), recomputed
 * here without report.ts: the loss count and window, failover to an answer the client really got, an
 * ejection after which no request failed or reached a faulted pod, losses confined to the fault's window,
 * and for a blackhole, Kubernetes none the wiser.
 */
export function reportProblems(r: DrillReport, outcomes: readonly Outcome[]): string[] {
  const problems: string[] = [];
  const fault = faultAbs(r);
  const readyAbs = r.timeline.start + r.timeline.readyAt;
  const failed = outcomes.filter((o) => !o.ok).sort((a, b) => a.at - b.at);
  if (r.requests !== outcomes.length) problems.push(`requests ${r.requests}, the client sent ${outcomes.length}`);
  if (r.requestsLost !== failed.length) problems.push(`requestsLost ${r.requestsLost}, the client lost ${failed.length}`);
  const window = failed.length ? failed.at(-1)!.at - failed[0]!.at : null;
  if ((window === null) !== (r.lossWindowMs === null) || (window !== null && Math.abs(window - r.lossWindowMs!) > 0.1)) problems.push(`lossWindowMs ${r.lossWindowMs}, the client's failures span ${window} ms`);
  if (!lossConfined(r)) problems.push(`losses sent ${JSON.stringify(r.lossWindow)} ms from the fault, outside [struck − ${r.intervalMs}, max(failover ${r.failoverMs}, ejection ${r.ejectedAfterMs}) + ${r.intervalMs}]`);
  if (r.failoverMs !== null) {
    const answer = outcomes.find((o) => o.ok && o.cluster !== r.faulted.cluster && Math.abs(o.at + o.ms - fault - r.failoverMs!) <= 0.1);
    if (!answer && r.failoverMs > 0) problems.push(`failoverMs ${r.failoverMs}: no answer from outside ${r.faulted.cluster} came then`);
  }
  if (r.ejectedFrom === 'client' && r.ejectedAfterMs !== null) {
    const faultedPods = new Set(r.faulted.pods);
    const late = outcomes.filter((o) => o.at >= fault + r.ejectedAfterMs! && o.at < readyAbs && (!o.ok || (o.pod !== undefined && faultedPods.has(o.pod))));
    if (late.length) problems.push(`ejectedAfterMs ${r.ejectedAfterMs}, yet ${late.length} later request(s) failed or reached a faulted pod (first seq ${late[0]!.seq})`);
  }
  if (r.fault === 'blackhole' && r.faultedStayedReady !== true) problems.push('Kubernetes did not keep the blackholed backends ready: the fault was not silent');
  return problems;
}

/**
 * What an independent client (another pod's stream to the same ClusterIP, over the drill) saw that the
 * report does not account for: a loss sent before the fault or more than `boundMs` after it (the fault's
 * target: 250 ms kill, 1 s blackhole; scale expects none at all: pass 0).
 */
export function observerProblems(r: DrillReport, observed: readonly Outcome[], boundMs: number): string[] {
  const fault = faultAbs(r);
  const outside = observed.filter((o) => !o.ok && (o.at < r.timeline.start + r.timeline.takenAt - r.intervalMs || o.at > fault + boundMs));
  return outside.length ? [`the observer lost ${outside.length} request(s) outside [fault, fault + ${boundMs} ms], sent ${outside.map((o) => Math.round(o.at - fault)).join(', ')} ms from the fault`] : [];
}

/**
 * Whether a pod's network namespace still holds a drill's blackhole (false also when the namespace is gone).
 */
export async function hasDrillRules(netns: string): Promise<boolean> {
  const rules = await inNetns(netns, 'iptables', ['-w', '-S']).catch(() => '');
  return rules.includes('SKEIN-DRILL');
}
