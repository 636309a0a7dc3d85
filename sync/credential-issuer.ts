// Renewal of peers' read identities over the mesh itself. The cluster owning a CA re-issues each connected
// peer's client certificate at half its lifetime and publishes it under a key that only that peer's etcd
// user can read; the peer's sync watches the key and switches to the new identity without a relist.
import { Credential, credentialKey, needsRenewal } from '../mesh/credentials.js';
import type { EtcdRef } from '../mesh/etcd.js';
import { decodeJson } from '../mesh/schema/values.js';
import type { ClusterCA } from '../mtls/cluster-ca.js';
import { issueRemoteClient } from '../mtls/mesh-identities.js';

export class CredentialIssuer {
  private peers: string[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly o: { etcd: EtcdRef; ca: ClusterCA; cluster: string; ttlMs: number; log: { warn: (o: object, m: string) => void } },
  ) {}

  start(): void {
    const every = Math.max(1_000, Math.min(60_000, this.o.ttlMs / 10));
    this.timer = setInterval(() => void this.renew().catch((err: Error) => this.o.log.warn({ err: err.message }, 'identity renewal failed')), every);
    this.timer.unref();
  }

  async setPeers(peers: string[]): Promise<void> {
    this.peers = peers;
    await this.renew();
  }

  private async renew(): Promise<void> {
    for (const peer of this.peers) {
      const key = credentialKey(this.o.cluster, peer);
      const raw = await this.o.etcd().get(key).string();
      // An unreadable credential is renewed like an expiring one.
      const current = raw ? decodeJson(Credential, raw) : undefined;
      if (current && !needsRenewal(current.certPem, this.o.ttlMs)) continue;
      const cert = await issueRemoteClient(this.o.ca, peer, this.o.ttlMs);
      await this.o.etcd().put(key).value(JSON.stringify(Credential.parse(cert)));
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
