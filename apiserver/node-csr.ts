// Certifies node agents in a Kubernetes install (mesh/node-identity.ts has the contract): follows the
// CertificateSigningRequests of signer skein.io/node and approves and signs one only when kube-apiserver
// recorded that it came from the agent service account's token bound to a live agent pod on node N, and
// the request proves a P-256 key and names exactly node-N; anything else is denied with the reason. The
// identity is etcd user node-N (what NodeUsers authorizes) and node N to the node CA.
import type { KubeConfig } from '@kubernetes/client-node';
import { startInformer, type RunningInformer } from '../mesh/kube/informer.js';
import { isNotFound, type KubeRest } from '../mesh/kube/rest.js';
import { Dns1123Subdomain, podPath } from '../mesh/kube/names.js';
import type { CertificateSigningRequest, KubeNode, Pod } from '../mesh/kube/objects.js';
import { AGENT_SERVICE_ACCOUNT, agentUsername, CSR_PATH, NODE_CSR_USAGES, NODE_SIGNER, TOKEN_EXTRA } from '../mesh/node-identity.js';
import { issueNodeIdentityFor, type MeshCA } from '../mtls/mesh-identities.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
type Decision = { node: string } | { refused: string };
const RETRY_MS = 2_000;

const one = (extra: Record<string, string[]> | undefined, key: string): string | undefined => {
  const v = extra?.[key];
  return v?.length === 1 ? v[0] : undefined;
};

/** Which node a request may be certified for, from what kube-apiserver recorded of its requester. */
async function nodeOfRequest(csr: CertificateSigningRequest, api: Pick<KubeRest, 'get'>): Promise<Decision> {
  const spec = csr.spec;
  if (spec.signerName !== NODE_SIGNER) return { refused: `signer ${spec.signerName} is not ${NODE_SIGNER}` };
  if (spec.username !== agentUsername()) return { refused: `requested by ${spec.username ?? 'nobody'}, not the agent service account ${agentUsername()}` };
  const node = one(spec.extra, TOKEN_EXTRA.nodeName);
  const podName = one(spec.extra, TOKEN_EXTRA.podName);
  const podUid = one(spec.extra, TOKEN_EXTRA.podUid);
  if (!node || !Dns1123Subdomain.safeParse(node).success || !podName || !podUid) {
    return { refused: 'the requester\'s token is not bound to a pod and node (kube-apiserver records node-name, pod-name and pod-uid of pod-bound tokens): file it from the agent pod' };
  }
  const extraUsages = (spec.usages ?? []).filter((u) => !(NODE_CSR_USAGES as readonly string[]).includes(u));
  if (extraUsages.length) return { refused: `usages ${extraUsages.join(', ')} are not granted to a node identity (only ${NODE_CSR_USAGES.join(', ')})` };
  let pod: Pod;
  try {
    pod = await api.get<Pod>(podPath(AGENT_SERVICE_ACCOUNT.namespace, podName));
  } catch (err) {
    if (isNotFound(err)) return { refused: `pod ${AGENT_SERVICE_ACCOUNT.namespace}/${podName} does not exist` };
    throw err;
  }
  // The token names the pod it was made for; the pod must still be that one, on that node, and alive.
  if (pod.metadata?.uid !== podUid) return { refused: `pod ${podName} is not the pod the token was bound to (uid ${podUid})` };
  if (pod.spec?.nodeName !== node) return { refused: `pod ${podName} runs on ${pod.spec?.nodeName ?? 'no node'}, not ${node}` };
  if (pod.metadata?.deletionTimestamp) return { refused: `pod ${podName} is being deleted` };
  if (pod.spec?.serviceAccountName !== AGENT_SERVICE_ACCOUNT.name) return { refused: `pod ${podName} does not run as ${AGENT_SERVICE_ACCOUNT.name}` };
  try {
    await api.get<KubeNode>(`/api/v1/nodes/${encodeURIComponent(node)}`);
  } catch (err) {
    if (isNotFound(err)) return { refused: `node ${node} does not exist` };
    throw err;
  }
  return { node };
}

const pending = (csr: CertificateSigningRequest) => !csr.status?.certificate && !(csr.status?.conditions ?? []).some((c) => c.type === 'Denied' || c.type === 'Failed');

export class NodeCsrSigner {
  private informer?: RunningInformer<CertificateSigningRequest>;
  private readonly busy = new Set<string>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly o: { kc: KubeConfig; rest: Pick<KubeRest, 'get' | 'put' | 'list'>; ca: MeshCA; nodeIdentityTtlMs?: number; log: Log }) {}

  start(): void {
    const fieldSelector = `spec.signerName=${NODE_SIGNER}`;
    this.informer = startInformer<CertificateSigningRequest>({
      kc: this.o.kc,
      path: CSR_PATH,
      fieldSelector,
      list: () => this.o.rest.list(`${CSR_PATH}?fieldSelector=${encodeURIComponent(fieldSelector)}`),
      onEvent: (type, csr) => {
        if (type !== 'delete') void this.handle(csr);
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'node certificate request watch restarting'),
    });
  }

  /** Decides one request once (an update from our own approval finds it busy, then issued). */
  async handle(csr: CertificateSigningRequest): Promise<void> {
    const name = csr.metadata?.name ?? '';
    if (!pending(csr) || this.busy.has(name)) return;
    this.busy.add(name);
    try {
      const decision = await nodeOfRequest(csr, this.o.rest);
      // The request itself is checked while signing (it proves its key and names exactly node-<node>).
      const outcome: { node: string; certPem: string } | { refused: string } =
        'node' in decision
          ? await issueNodeIdentityFor(this.o.ca, decision.node, Buffer.from(csr.spec.request, 'base64').toString('utf8'), this.o.nodeIdentityTtlMs).then(
              (certPem) => ({ node: decision.node, certPem }),
              (err: Error) => ({ refused: err.message }),
            )
          : decision;
      const path = `${CSR_PATH}/${encodeURIComponent(name)}`;
      const decided = (type: 'Approved' | 'Denied' | 'Failed', reason: string, message: string) => ({
        ...csr,
        status: { ...csr.status, conditions: [...(csr.status?.conditions ?? []), { type, status: 'True', reason, message, lastUpdateTime: new Date().toISOString() }] },
      });
      const approvedBefore = (csr.status?.conditions ?? []).some((c) => c.type === 'Approved');
      if ('refused' in outcome) {
        this.o.log.warn({ request: name, requester: csr.spec.username, why: outcome.refused }, 'denied a node identity request');
        // Denied cannot follow Approved (someone with approve rights said yes): the signer's word is Failed.
        if (approvedBefore) await this.o.rest.put(`${path}/status`, decided('Failed', 'SkeinNodeIdentityRefused', outcome.refused));
        else await this.o.rest.put(`${path}/approval`, decided('Denied', 'SkeinNodeIdentityRefused', outcome.refused));
        return;
      }
      // Approved already when signing failed before: only the signing is left to do.
      const approved = approvedBefore
        ? csr
        : await this.o.rest.put<CertificateSigningRequest>(`${path}/approval`, decided('Approved', 'SkeinNodeIdentity', `the agent pod of node ${outcome.node}`));
      // PEM blocks each on their own lines (kube-apiserver refuses "-----END ...----------BEGIN ...").
      const chain = `${outcome.certPem.trim()}\n${this.o.ca.mesh.certPem.trim()}\n`;
      await this.o.rest.put(`${path}/status`, { ...approved, status: { ...approved.status, certificate: Buffer.from(chain).toString('base64') } });
      this.o.log.info({ request: name, node: outcome.node }, 'issued a node identity');
    } catch (err) {
      // The API failed us (not the request): read it again and decide later; one retry pending per request.
      this.o.log.warn({ request: name, err: (err as Error).message }, 'could not decide a node identity request, retrying');
      if (!this.stopped && !this.retries.has(name)) {
        this.retries.set(
          name,
          setTimeout(() => {
            this.retries.delete(name);
            void this.o.rest.get<CertificateSigningRequest>(`${CSR_PATH}/${encodeURIComponent(name)}`).then((fresh) => this.handle(fresh), () => undefined);
          }, RETRY_MS),
        );
      }
    } finally {
      this.busy.delete(name);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.retries.values()) clearTimeout(t);
    await this.informer?.stop();
  }
}
