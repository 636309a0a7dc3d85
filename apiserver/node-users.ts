// Keeps one mesh etcd user per Kubernetes Node (node-<name>), so each node agent reads only what its
// datapath and Workload API need and writes only its own view. Follows the Node objects: a new node gets its
// user, a deleted node's user and role go. Reconciles run one at a time and retry until they succeed.
import type { KubeConfig } from '@kubernetes/client-node';
import { startInformer, type RunningInformer } from '../mesh/kube/informer.js';
import type { KubeRest } from '../mesh/kube/rest.js';
import { Dns1123Subdomain } from '../mesh/kube/names.js';
import { syncNodeUsers } from './mesh-auth.js';
import type { EtcdRef } from '../mesh/etcd.js';
import { retryUntilDone } from '../mesh/backoff.js';
import type { KubeNode } from '../mesh/kube/objects.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export class NodeUsers {
  private informer?: RunningInformer<KubeNode>;
  private running = false;
  private again = false;
  private synced = false;
  private stopped = false;

  constructor(private readonly o: { kc: KubeConfig; rest: KubeRest; etcd: EtcdRef; cluster: string; log: Log }) {}

  start(): void {
    this.informer = startInformer<KubeNode>({
      kc: this.o.kc,
      path: '/api/v1/nodes',
      list: () => this.o.rest.list('/api/v1/nodes'),
      onEvent: (type) => {
        if (this.synced && type !== 'update') this.reconcile();
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'node watch restarting'),
    });
    void this.informer.synced.then(() => {
      this.synced = true;
      this.reconcile();
    });
  }

  /** Coalesces: a burst of node events is one pass, and a pass never overlaps another. */
  private reconcile(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void (async () => {
      do {
        this.again = false;
        const names = (this.informer?.list() ?? []).map((n) => n.metadata?.name ?? '').filter((n) => Dns1123Subdomain.safeParse(n).success);
        await retryUntilDone('syncing node etcd users', () => syncNodeUsers(this.o.etcd(), this.o.cluster, names), this.o.log, { stopped: () => this.stopped });
      } while (this.again && !this.stopped);
      this.running = false;
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
  }
}
