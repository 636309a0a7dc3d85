// A serving certificate that renews itself at half its lifetime: `issue` makes one, every renewal is handed
// to `onRenew` (a TLS server swaps its secure context, a file is rewritten) while connections opened before
// keep the certificate they were made with. A failed renewal is retried; the current certificate serves on
// meanwhile (it has half its life left).
import { X509Certificate } from 'node:crypto';
import type { PemPair } from './x509.js';
import { runAt } from './long-timer.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

const RETRY_MS = 5_000;

export interface HeldCertificate extends PemPair {
  serial: string;
  notAfterMs: number;
}

const held = (pair: PemPair): HeldCertificate => {
  const c = new X509Certificate(pair.certPem);
  return { ...pair, serial: c.serialNumber, notAfterMs: Date.parse(c.validTo) };
};

export class RenewingCertificate {
  private cancelTimer?: () => void;
  private stopped = false;
  /** Renewals done (not counting the first certificate). */
  renewals = 0;

  private constructor(
    private cert: HeldCertificate,
    private readonly o: { what: string; issue: () => Promise<PemPair>; onRenew: (c: HeldCertificate) => void | Promise<void>; log: Log },
  ) {
    this.schedule(Date.now());
  }

  /** Issues the first certificate (the caller serves it) and renews from then on. */
  static async start(o: RenewingCertificate['o']): Promise<RenewingCertificate> {
    return new RenewingCertificate(held(await o.issue()), o);
  }

  get current(): HeldCertificate {
    return this.cert;
  }

  private schedule(issuedAt: number): void {
    this.arm(Math.max(1000, (this.cert.notAfterMs - issuedAt) / 2));
  }

  private arm(ms: number): void {
    this.cancelTimer?.();
    if (this.stopped) return;
    this.cancelTimer = runAt(Date.now() + ms, () => void this.renew());
  }

  private async renew(): Promise<void> {
    try {
      const issuedAt = Date.now();
      const next = held(await this.o.issue());
      if (this.stopped) return;
      await this.o.onRenew(next);
      this.cert = next;
      this.renewals++;
      this.o.log.info({ serial: next.serial, notAfter: new Date(next.notAfterMs).toISOString() }, `${this.o.what} renewed`);
      this.schedule(issuedAt);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, `renewing ${this.o.what} failed, retrying in ${RETRY_MS / 1000} s (the current one is valid until ${new Date(this.cert.notAfterMs).toISOString()})`);
      this.arm(RETRY_MS);
    }
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
  }
}
