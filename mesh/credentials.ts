// Short-lived transport identities: where a peer's renewed read identity is published (a key only that
// peer's etcd user can read), its shape, and when any certificate is due for renewal.
import { X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { keys } from './schema/keys.js';

export const credentialKey = keys.credential;

export const Credential = z.object({
  certPem: z.string().includes('BEGIN CERTIFICATE'),
  keyPem: z.string().includes('PRIVATE KEY'),
});
export type Credential = z.infer<typeof Credential>;

export function remainingMs(certPem: string | undefined, now = Date.now()): number {
  if (!certPem) return 0;
  try {
    return Date.parse(new X509Certificate(certPem).validTo) - now;
  } catch {
    return 0;
  }
}

/**
 * Due for renewal under a lifetime policy of `ttlMs`: less than half of it left, or more than it allows (the
 * policy was shortened since issuance, and identities follow it instead of living out their old term).
 */
export function needsRenewal(certPem: string | undefined, ttlMs: number, now = Date.now()): boolean {
  const left = remainingMs(certPem, now);
  return left < ttlMs / 2 || left > ttlMs * 1.1 + 1_000;
}
