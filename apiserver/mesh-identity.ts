// This process's own identity on the mesh etcd (etcd user `root`), short-lived and renewed at half-life:
// a fresh certificate, a new client verified with one read, then the swap; the old client is closed once
// calls in flight on it have had time to finish. Lease holders move their leases on `onRenewed`.
import type { Etcd3 } from 'etcd3';
import type { ClusterCA } from '../mtls/cluster-ca.js';
import { issueMeshRootClient, meshEtcdServerName } from '../mtls/mesh-identities.js';
import { needsRenewal, remainingMs } from '../mesh/credentials.js';
import { connectMeshEtcd, type EtcdRef } from '../mesh/etcd.js';
import { keys } from '../mesh/schema/keys.js';

const DRAIN_MS = 30_000;

export interface MeshIdentityOptions {
  endpoints: string[];
  ca: ClusterCA;
  cluster: string;
  ttlMs: number;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
}

export class MeshIdentity {
  private client!: Etcd3;
  private certPem = '';
  private timer?: NodeJS.Timeout;
  private readonly listeners: (() => Promise<void>)[] = [];
  rotations = 0;

  private constructor(private readonly o: MeshIdentityOptions) {}

  static async create(o: MeshIdentityOptions): Promise<MeshIdentity> {
    const m = new MeshIdentity(o);
    m.client = await m.connect();
    return m;
  }

  private async connect(): Promise<Etcd3> {
    const cert = await issueMeshRootClient(this.o.ca, this.o.ttlMs);
    this.certPem = cert.certPem;
    return connectMeshEtcd({ endpoints: this.o.endpoints, tls: { caPem: this.o.ca.mesh.certPem, certPem: cert.certPem, keyPem: cert.keyPem }, serverName: meshEtcdServerName(this.o.cluster) });
  }

  readonly ref: EtcdRef = () => this.client;

  get expires(): string {
    return new Date(Date.now() + remainingMs(this.certPem)).toISOString();
  }

  onRenewed(fn: () => Promise<void>): void {
    this.listeners.push(fn);
  }

  start(): void {
    const every = Math.max(1_000, Math.min(60_000, this.o.ttlMs / 10));
    this.timer = setInterval(() => {
      if (needsRenewal(this.certPem, this.o.ttlMs)) void this.renew().catch((err: Error) => this.o.log.warn({ err: err.message }, 'mesh identity renewal failed; the current one stays in use'));
    }, every);
    this.timer.unref();
  }

  async renew(): Promise<void> {
    const previousCert = this.certPem;
    const next = await this.connect();
    try {
      await next.get(keys.config(this.o.cluster)).string();
    } catch (err) {
      this.certPem = previousCert;
      next.close();
      throw err;
    }
    const old = this.client;
    this.client = next;
    this.rotations++;
    for (const fn of this.listeners) await fn().catch((err: Error) => this.o.log.warn({ err: err.message }, 'moving to the renewed identity failed'));
    setTimeout(() => old.close(), DRAIN_MS).unref();
    this.o.log.info({ expires: this.expires }, 'mesh identity renewed');
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.client.close();
  }
}
