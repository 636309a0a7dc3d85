// Follows this cluster's workload CA Secret (skein-workload-ca) while `skein ca rotate` moves it through its
// phases (mtls/ca-rotation.ts), and makes each phase true in the running cluster without a restart, in the
// order overlapping trust needs:
//   1. the node CA signs with the CA the Secret names (from activate on, the new one);
//   2. the trust bundle (every CA holders must trust now) goes to this cluster's agents (local bundles key)
//      and to its peers (the exported bundle key, which their sync reads: sync/peer-judge.ts);
//   3. the node CA endpoint names the signing CA's serial: a new one makes every agent re-issue its SVIDs.
// One way, like everything else: Kubernetes → this process → the mesh etcd → peers' sync and our agents.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { retryUntilDone } from '../mesh/backoff.js';
import type { EtcdRef } from '../mesh/etcd.js';
import { startInformer, type RunningInformer } from '../mesh/kube/informer.js';
import { decodeSecretData } from '../mesh/kube/secrets.js';
import type { Secret } from '../mesh/kube/objects.js';
import type { KubeRest } from '../mesh/kube/rest.js';
import { SKEIN_NAMESPACE } from '../mesh/service-ref.js';
import { keys } from '../mesh/schema/keys.js';
import { encodeValue, ExportedBundle } from '../mesh/schema/values.js';
import { publishBundle } from '../mesh/trust-bundles.js';
import { workloadCaState, type WorkloadCaState } from '../mtls/ca-rotation.js';
import { WORKLOAD_CA_SECRET, type ClusterCA } from '../mtls/cluster-ca.js';
import { checkBundle, splitPemCertificates } from '../mtls/trust-bundle.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

/** The workload CA as /v1/status shows it: the phase, the signing CA and the bundle's CAs by serial. */
export interface WorkloadCaView {
  phase: WorkloadCaState['phase'];
  since?: string;
  signer: string;
  bundle: string[];
}

export const serialOf = (pem: string) => new X509Certificate(pem).serialNumber;

export class WorkloadCaFollower {
  private state: WorkloadCaState;
  private informer?: RunningInformer<Secret>;
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly o: {
      kc: KubeConfig;
      rest: KubeRest;
      etcd: EtcdRef;
      ca: ClusterCA;
      log: Log;
      /** Step 1: sign with this CA from now on (the node CA), before anyone is told. */
      onSigning: (state: WorkloadCaState) => void;
      /** Step 3: tell the agents which CA signs (the node CA endpoint). */
      announceSigner: (serial: string) => Promise<void>;
    },
  ) {
    this.state = { phase: 'idle', signing: o.ca.workload, bundlePem: o.ca.workloadBundle };
  }

  get current(): WorkloadCaState {
    return this.state;
  }

  view(): WorkloadCaView {
    return { phase: this.state.phase, since: this.state.since, signer: serialOf(this.state.signing.certPem), bundle: splitPemCertificates(this.state.bundlePem).map(serialOf) };
  }

  /** Publishes the bundle the process started with, then follows the Secret. */
  async start(): Promise<void> {
    await this.publish(this.state);
    const path = `/api/v1/namespaces/${SKEIN_NAMESPACE}/secrets`;
    const fieldSelector = `metadata.name=${WORKLOAD_CA_SECRET}`;
    this.informer = startInformer<Secret>({
      kc: this.o.kc,
      path,
      fieldSelector,
      list: () => this.o.rest.list(`${path}?fieldSelector=${encodeURIComponent(fieldSelector)}`),
      onEvent: (type, secret) => {
        if (type !== 'delete') this.chain = this.chain.then(() => this.follow(decodeSecretData(secret.data)));
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'workload CA secret watch restarting'),
    });
  }

  private async follow(data: Record<string, string>): Promise<void> {
    let next: WorkloadCaState;
    try {
      next = workloadCaState(data);
      // The Secret is the operator's to edit: a broken one changes nothing here (the last good state serves on).
      const b = checkBundle(next.bundlePem, this.o.ca.trustDomain);
      if (!b.ok) throw new Error(b.error);
      if (!new X509Certificate(next.signing.certPem).checkPrivateKey(createPrivateKey(next.signing.keyPem))) throw new Error('ca.key is not the key of ca.crt');
    } catch (err) {
      this.o.log.warn({ secret: WORKLOAD_CA_SECRET, err: (err as Error).message }, 'ignoring a workload CA Secret that is not a valid rotation state; keeping the last good one');
      return;
    }
    const prev = this.state;
    if (prev.bundlePem === next.bundlePem && prev.signing.certPem === next.signing.certPem && prev.phase === next.phase) return;
    const signerChanged = prev.signing.certPem !== next.signing.certPem;
    if (signerChanged) this.o.onSigning(next);
    this.state = next;
    this.o.log.info(this.view(), 'workload CA changed');
    await this.publish(next);
    if (signerChanged) await retryUntilDone('announcing the new signing CA to the agents', () => this.o.announceSigner(serialOf(next.signing.certPem)), this.o.log, { stopped: () => this.stopped });
  }

  /** The bundle for this cluster's agents and for its peers, each written only when it changed. */
  private async publish(state: WorkloadCaState): Promise<void> {
    const { cluster, trustDomain } = this.o.ca;
    await retryUntilDone(
      'publishing the trust bundle',
      async () => {
        await publishBundle(this.o.etcd(), cluster, { trustDomain, caPem: state.bundlePem, cluster, own: true });
        const key = keys.exportedBundle(cluster);
        const value = encodeValue(ExportedBundle, { cluster, trustDomain, caPem: state.bundlePem });
        if ((await this.o.etcd().get(key).string()) !== value) await this.o.etcd().put(key).value(value);
      },
      this.o.log,
      { stopped: () => this.stopped },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
  }
}
