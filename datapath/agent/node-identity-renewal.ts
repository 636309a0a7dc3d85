// The agent's own node identity (etcd user node-<node>, its node to the node CA), renewed at half its lifetime
// the way kubelet rotates its client certificate: a new key made here, its request sent over the node CA
// channel the current certificate authenticates, the answer checked (our node, our key, the mesh CA), written
// where the agent keeps it (each file replaced by a rename: a reader gets the old file or the new one, never
// a part) and handed to the credentials the mesh etcd client and the node CA channel dial with. The etcd
// connections already open (watches, the lease) go on untouched and the next handshake presents the new
// certificate; the node CA channel is opened anew at once, because the node CA authenticates each call by
// its connection's certificate and renews nothing for one that expired. A failed renewal is logged and retried with backoff while the current one still serves.
import { X509Certificate } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { backoffDelay } from '../../mesh/backoff.js';
import { runAt } from '../../mtls/long-timer.js';
import { checkIssuedNodeIdentity, nodeIdentityRequest } from '../../mtls/mesh-identities.js';
import type { SwappableCredentials } from '../../mtls/swappable-credentials.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

const RETRY = { minMs: 1_000, maxMs: 60_000, jitter: 0.2 };

/**
 * When a certificate is due: half-way from when it was received (or, for the one found at start, its
 * notBefore) to its notAfter. Counted from receipt because issuers backdate notBefore for clock skew (a
 * minute here), which would make a short-lived certificate look half gone the moment it arrives.
 */
export const halfLifeAt = (cert: X509Certificate, receivedAt?: number) => {
  const from = Math.max(Date.parse(cert.validFrom), receivedAt ?? -Infinity);
  return from + (Date.parse(cert.validTo) - from) / 2;
};

/** Replaces `path` by a rename: readers see the old content or the new, whole. */
function replaceFile(path: string, content: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content, { mode });
  renameSync(tmp, path);
}

export interface NodeIdentityStatus {
  serial: string;
  notAfter: string;
  renewals: number;
  failures: number;
  lastError?: string;
  nextRenewalAt?: string;
}

export class NodeIdentityRenewal {
  private cancelTimer?: () => void;
  private stopped = false;
  private cert: X509Certificate;
  private attempt = 0;
  private nextAt?: number;
  private lastError?: string;
  renewals = 0;
  failures = 0;

  constructor(
    private readonly o: {
      node: string;
      /** Where the agent keeps its identity (the files it was started with). */
      files: { cert: string; key: string };
      credentials: SwappableCredentials;
      /** Sends the request over the node CA channel; resolves the node certificate and the CA that signed it. */
      renew: (csrPem: string) => Promise<{ certificatePem: string; caPem: string }>;
      /** The new certificate is in the credentials: open what must present it now (the node CA channel). */
      onRenewed?: () => void;
      log: Log;
    },
  ) {
    this.cert = new X509Certificate(o.credentials.current.certPem);
  }

  start(): void {
    this.arm(halfLifeAt(this.cert) - Date.now());
  }

  /** The certificate new handshakes present now. */
  get current(): X509Certificate {
    return this.cert;
  }

  status(): NodeIdentityStatus {
    return {
      serial: this.cert.serialNumber,
      notAfter: new Date(this.cert.validTo).toISOString(),
      renewals: this.renewals,
      failures: this.failures,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.nextAt ? { nextRenewalAt: new Date(this.nextAt).toISOString() } : {}),
    };
  }

  private arm(ms: number): void {
    this.cancelTimer?.();
    if (this.stopped) return;
    this.nextAt = Date.now() + Math.max(0, ms);
    this.cancelTimer = runAt(this.nextAt, () => void this.renew());
  }

  /** One renewal; on failure the next attempt is armed with backoff. */
  async renew(): Promise<void> {
    try {
      const { keyPem, csrPem } = await nodeIdentityRequest(this.o.node);
      const sentAt = Date.now();
      const issued = await this.o.renew(csrPem);
      if (this.stopped) return;
      const next = checkIssuedNodeIdentity({ certPem: issued.certificatePem, caPem: issued.caPem }, this.o.node, keyPem);
      if (!next.verify(new X509Certificate(this.o.credentials.caPem).publicKey)) throw new Error('the renewed certificate is signed by another mesh CA than the one this agent trusts (a mesh CA change needs a new identity from the init step)');
      // Key first: until the certificate follows, the files hold the old pair's certificate with the new key
      // for a moment; a restart in that moment fails at start and the init step makes a new identity.
      replaceFile(this.o.files.key, keyPem, 0o640);
      replaceFile(this.o.files.cert, issued.certificatePem, 0o644);
      this.o.credentials.setIdentity({ certPem: issued.certificatePem, keyPem });
      this.o.onRenewed?.();
      this.cert = next;
      this.renewals++;
      this.attempt = 0;
      this.lastError = undefined;
      this.o.log.info({ serial: next.serialNumber, notAfter: new Date(next.validTo).toISOString() }, 'node identity renewed');
      this.arm(halfLifeAt(next, sentAt) - Date.now());
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      // Backoff, but a certificate close to its end is retried more often than the cap.
      const delay = Math.min(backoffDelay(this.attempt++, RETRY), Math.max(RETRY.minMs, (Date.parse(this.cert.validTo) - Date.now()) / 4));
      this.o.log.warn({ err: this.lastError, retryInMs: Math.round(delay), notAfter: new Date(this.cert.validTo).toISOString() }, 'renewing the node identity failed; the current one stays in use, retrying');
      this.arm(delay);
    }
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
  }
}
