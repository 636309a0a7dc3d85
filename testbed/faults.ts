// Network faults inside a test bed's pods, for `skein drill --fault blackhole`: every packet to and from a
// pod is dropped in its network namespace, except its own node's (the node runner's readiness probes, as a
// kubelet's come from its node), so the pod stops answering while Kubernetes still reports it ready. The
// rules live in two chains of their own (SKEIN-DRILL-IN/OUT) jumped to first from INPUT/OUTPUT, so removing
// them restores the pod exactly. The drops of every pod start at the same second of the kernel's clock (the
// `time` match): installing rules in several namespaces takes tens to hundreds of ms each, and a fault meant to
// hit the backends together (a node, a zone, a cluster going dark) must not reach them one after another. Only a test bed can do this: the drill reaches it through deploy/cli/local.ts.
import { existsSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { run } from './run.js';
import { readState, statePaths, type ClusterState } from './state.js';
import { fabricNet, podNetnsName } from './topology.js';

const IN = 'SKEIN-DRILL-IN';
/** Installing the rules in a pod's namespace took 64–350 ms on a loaded test bed: the drops start after this. */
const START_MARGIN_MS = 600;
const OUT = 'SKEIN-DRILL-OUT';

/** The time match's form of a moment (whole seconds, UTC). */
const timeMatch = (atMs: number) => new Date(atMs).toISOString().slice(0, 19);

/**
 * The rules blackhole adds (iptables-restore --noflush input): drop all but loopback and `prober`, the address
 * the node runners' readiness probes come from (the host's end of the fabric), so Kubernetes keeps the pod ready;
 * from `startAtMs` on (a whole second of the kernel's wall clock), else at once.
 */
export function blackholeRules(prober: string, startAtMs?: number): string {
  const from = startAtMs === undefined ? '' : ` -m time --datestart ${timeMatch(startAtMs)}`;
  return [
    '*filter',
    `:${IN} - [0:0]`,
    `:${OUT} - [0:0]`,
    `-A ${IN} -i lo -j RETURN`,
    `-A ${IN} -s ${prober}/32 -j RETURN`,
    `-A ${IN}${from} -j DROP`,
    `-A ${OUT} -o lo -j RETURN`,
    `-A ${OUT} -d ${prober}/32 -j RETURN`,
    `-A ${OUT}${from} -j DROP`,
    `-I INPUT 1 -j ${IN}`,
    `-I OUTPUT 1 -j ${OUT}`,
    'COMMIT',
    '',
  ].join('\n');
}

/** Removes the jumps and both chains, whatever an earlier (maybe killed) drill left; fails if any remain. */
const REMOVE = `for c in INPUT:${IN} OUTPUT:${OUT}; do while iptables -w -D "\${c%%:*}" -j "\${c#*:}" 2>/dev/null; do :; done; iptables -w -F "\${c#*:}" 2>/dev/null; iptables -w -X "\${c#*:}" 2>/dev/null; done; ! iptables -w -S | grep -q SKEIN-DRILL`;

const sameServer = (a: string, b: string | undefined) => {
  try {
    return b !== undefined && new URL(a).host === new URL(b).host;
  } catch {
    return false;
  }
};

class Blackholes {
  /** Netns → the address its blackhole still lets through (the prober). */
  private readonly probers = new Map<string, string>();
  private readonly netnsPattern: RegExp;

  constructor(
    private readonly tag: string,
    private readonly cluster: ClusterState,
    readonly where: string,
  ) {
    this.netnsPattern = new RegExp(`^sk-${tag}-p-[0-9a-f]{12}$`);
  }

  private check(netns: string): void {
    if (!this.netnsPattern.test(netns)) throw new Error(`${netns} is not a pod network namespace of ${this.where}`);
  }

  async locate(pods: readonly { uid: string; node: string }[]): Promise<string[]> {
    if (process.getuid?.() !== 0) throw new Error('the blackhole fault runs iptables inside the test bed\'s pod network namespaces: run the drill as root (sudo), as skein local itself');
    const out: string[] = [];
    for (const pod of pods) {
      const index = Number(/-node-(\d+)$/.exec(pod.node)?.[1]);
      if (!index) throw new Error(`pod ${pod.uid} runs on node "${pod.node}", not a node of ${this.where}`);
      const netns = podNetnsName(this.tag, pod.uid);
      if (!existsSync(`/run/netns/${netns}`)) throw new Error(`pod ${pod.uid} has no network namespace on this machine (${netns}): is ${this.where} the test bed it runs in?`);
      this.probers.set(netns, fabricNet(this.tag).rootIp);
      out.push(netns);
    }
    await this.restore(out);
    return out;
  }

  /**
   * Installs the rules in every namespace, all starting at the next whole second at least START_MARGIN_MS away,
   * and resolves once that moment has passed, with the moment the fault began (ms since the epoch): the start, or
   * if every namespace took longer than the margin to install, the first one in place.
   */
  async blackhole(netns: readonly string[]): Promise<number> {
    const startAt = Math.ceil((Date.now() + START_MARGIN_MS) / 1000) * 1000;
    let first = Infinity;
    await Promise.all(
      netns.map(async (ns) => {
        const prober = this.probers.get(ns);
        if (!prober) throw new Error(`blackhole ${ns}: locate its pod first`);
        await run('ip', ['netns', 'exec', ns, 'iptables-restore', '-w', '--noflush'], { input: blackholeRules(prober, startAt) });
        first = Math.min(first, Math.max(startAt, Date.now()));
      }),
    );
    const wait = first - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    return first;
  }

  async restore(netns: readonly string[]): Promise<void> {
    for (const ns of netns) this.check(ns);
    // A namespace already gone (its pod deleted) took its rules with it.
    await Promise.all(netns.filter((ns) => existsSync(`/run/netns/${ns}`)).map((ns) => run('ip', ['netns', 'exec', ns, 'sh', '-c', REMOVE])));
  }
}

/**
 * The test bed cluster `kc` points at (its current context's API server is one of a test bed's clusters in
 * one of `stateDirs`), able to blackhole its pods; undefined: not a test bed cluster.
 */
export function openNetFaults(kc: KubeConfig, stateDirs: readonly string[]): Blackholes | undefined {
  const server = kc.getCurrentCluster()?.server;
  for (const dir of new Set(stateDirs)) {
    let state;
    try {
      state = readState(dir);
    } catch {
      continue; // not a valid test bed state: not this one
    }
    if (!state || state.phase !== 'up') continue;
    const cluster = state.clusters.find((c) => sameServer(c.apiserverUrl, server));
    if (cluster) return new Blackholes(state.tag, cluster, `test bed ${statePaths(dir).dir}, cluster ${cluster.name}`);
  }
  return undefined;
}
