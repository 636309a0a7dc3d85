// Active TCP probes from this node to backends outlier detection asks about (outliers.ts: probesWanted): a
// connect with a short timeout, nothing sent, closed at once. They run in the agent's network namespace, which
// is the node's (a hostNetwork DaemonSet; on the test bed the agent is started inside the node's namespace),
// so a probe takes the path a pod's connect takes past its own veth. Bounded: at most `maxInFlight` at once
// per node, and what to probe is bounded by outliers.ts (only failing, suspected or ejected backends).
import { connect } from 'node:net';
import type { ProbeOutcome } from './outliers.js';

/**
 * One probe: resolves 'ok' when the connect is established within timeoutMs, 'refused' when the backend's host
 * resets it (nothing listens), 'failed' otherwise (never rejects).
 */
export type ProbeConnect = (ip: string, port: number, timeoutMs: number) => Promise<ProbeOutcome>;

export const tcpConnectProbe: ProbeConnect = (ip, port, timeoutMs) =>
  new Promise((resolve) => {
    const socket = connect({ host: ip, port, noDelay: true });
    const done = (outcome: ProbeOutcome) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done('failed'), timeoutMs);
    socket.once('connect', () => done('ok'));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED' ? 'refused' : 'failed'));
  });

export interface ProberOptions {
  /** A probe that is not established by then fails: like a client connect at the SYN RTO. */
  timeoutMs: number;
  /** Probes in flight at once on this node. */
  maxInFlight: number;
  connect?: ProbeConnect;
  now: () => number;
}

export class Prober {
  private inFlight = 0;
  started = 0;

  constructor(private readonly o: ProberOptions) {}

  /**
   * Starts up to `wanted` probes per backend key (TCP/ip:port) within the node's bound; `onStart` is told of
   * each start, `onEnd` of each outcome. Returns how many started.
   */
  run(wanted: ReadonlyMap<string, number>, onStart: (key: string, atMs: number) => void, onEnd: (key: string, outcome: ProbeOutcome, startedMs: number, endedMs: number) => void): number {
    let n = 0;
    for (const [key, count] of wanted) {
      const m = /^TCP\/([\d.]+):(\d+)$/.exec(key);
      if (!m) continue;
      for (let i = 0; i < count && this.inFlight < this.o.maxInFlight; i++) {
        const startedMs = this.o.now();
        this.inFlight++;
        this.started++;
        n++;
        onStart(key, startedMs);
        void (this.o.connect ?? tcpConnectProbe)(m[1]!, Number(m[2]), this.o.timeoutMs)
          .catch((): ProbeOutcome => 'failed')
          .then((outcome) => {
            this.inFlight--;
            onEnd(key, outcome, startedMs, this.o.now());
          });
      }
    }
    return n;
  }

  get probing(): number {
    return this.inFlight;
  }
}
