// The apiserver's signing service for its node agents (gRPC over mTLS). The caller is the node its
// certificate names (spiffe://<trust domain>/skein/node/<node>, signed by this cluster's CA); it gets SVIDs
// only for pods the Kubernetes API binds to that node, for the pod's own namespace and service account.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { V1Pod } from '@kubernetes/client-node';
import type { ClusterCA } from '../../mtls/cluster-ca.js';
import { signJwtSvid, signX509Svid, workloadSpiffeId } from '../../mtls/svid.js';
import { issueCertificate } from '../../mtls/x509.js';
import { nodeSpiffeId } from '../../mtls/mesh-identities.js';
import { sourceDir } from '../../mtls/source-dir.js';
import { X509Certificate } from 'node:crypto';
import { isNotFound, type KubeRest } from '../kube/rest.js';

/** The name in the node CA's serving certificate that agents verify (its address moves with the pod). */
export const NODE_CA_NAME = 'skein-apiserver.skein-system.svc';

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

export function loadNodeCaApi(): grpc.GrpcObject {
  const def = protoLoader.loadSync(join(sourceDir(import.meta.url), 'node-ca.proto'), { keepCase: true, longs: Number, defaults: true });
  return grpc.loadPackageDefinition(def);
}

type Handler<Req> = (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => void;
const denied = (details: string) => ({ code: grpc.status.PERMISSION_DENIED, details });

export class NodeCaServer {
  private readonly server = new grpc.Server();
  readonly counts = { x509: 0, jwt: 0, denied: 0 };
  private readonly bundleDer: Buffer;

  constructor(
    private readonly o: { ca: ClusterCA; rest: KubeRest; svidTtlMs: number; jwtTtlMs: number; log: { warn: (o: object, m: string) => void } },
  ) {
    this.bundleDer = new X509Certificate(o.ca.ca.certPem).raw;
    const api = loadNodeCaApi() as unknown as { skein: { v1: { NodeCA: { service: grpc.ServiceDefinition } } } };
    const signX509: Handler<{ pod: PodRef; csr: Buffer }> = (call, cb) =>
      void this.authorize(call, call.request.pod).then(async (a) => {
        if ('error' in a) return cb(a.error);
        try {
          const svid = await signX509Svid(this.o.ca.ca, { spiffeId: a.spiffeId, csrDer: call.request.csr, ttlMs: this.o.svidTtlMs });
          this.counts.x509++;
          cb(null, { spiffe_id: a.spiffeId, certificate: svid.certDer, bundle: this.bundleDer, expires_at_unix_ms: svid.expiresAt.getTime() });
        } catch (err) {
          cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
        }
      });
    const signJwt: Handler<{ pod: PodRef; audience: string[] }> = (call, cb) =>
      void this.authorize(call, call.request.pod).then(async (a) => {
        if ('error' in a) return cb(a.error);
        try {
          const jwt = await signJwtSvid(this.o.ca.ca, { spiffeId: a.spiffeId, audience: call.request.audience, ttlMs: this.o.jwtTtlMs });
          this.counts.jwt++;
          cb(null, { spiffe_id: a.spiffeId, token: jwt.token, expires_at_unix_ms: jwt.expiresAt.getTime() });
        } catch (err) {
          cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
        }
      });
    this.server.addService(api.skein.v1.NodeCA.service, { SignX509SVID: signX509, SignJWTSVID: signJwt });
  }

  /** Serves on host:port with a serving certificate for `ips` from the cluster CA; resolves the port. */
  async listen(host: string, port: number, ips: string[]): Promise<number> {
    const serving = await issueCertificate(this.o.ca.ca, { dnsNames: [NODE_CA_NAME], ipAddresses: ips, usage: 'server', ttlMs: 365 * 24 * 3600_000 });
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(this.o.ca.ca.certPem), [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], true);
    return new Promise((resolve, reject) => this.server.bindAsync(`${host}:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound))));
  }

  /** The node the caller's certificate names, and the pod's SPIFFE ID if the pod is bound to that node. */
  private async authorize(call: grpc.ServerUnaryCall<unknown, unknown>, pod: PodRef | undefined): Promise<{ spiffeId: string } | { error: Partial<grpc.StatusObject> }> {
    const refuse = (details: string) => {
      this.counts.denied++;
      this.o.log.warn({ details }, 'node CA refused a request');
      return { error: denied(details) };
    };
    const san = call.getAuthContext()?.sslPeerCertificate?.subjectaltname ?? '';
    const prefix = `URI:${nodeSpiffeId(this.o.ca.trustDomain, '')}`;
    const uri = san.split(', ').find((s) => s.startsWith(prefix));
    const node = uri?.slice(prefix.length);
    if (!node || node.includes('/')) return refuse(`the client certificate names no node of ${this.o.ca.trustDomain} (want URI SAN ${nodeSpiffeId(this.o.ca.trustDomain, '<node>')})`);
    if (!pod?.namespace || !pod.name || !pod.uid) return refuse('pod: namespace, name and uid are required');
    let p: V1Pod;
    try {
      p = await this.o.rest.get<V1Pod>(`/api/v1/namespaces/${pod.namespace}/pods/${pod.name}`);
    } catch (err) {
      if (isNotFound(err)) return refuse(`pod ${pod.namespace}/${pod.name} does not exist`);
      return { error: { code: grpc.status.UNAVAILABLE, details: `the Kubernetes API: ${(err as Error).message}` } };
    }
    if (p.metadata?.uid !== pod.uid) return refuse(`pod ${pod.namespace}/${pod.name} has uid ${p.metadata?.uid}, not ${pod.uid} (it was replaced)`);
    if (p.spec?.nodeName !== node) return refuse(`pod ${pod.namespace}/${pod.name} is bound to ${p.spec?.nodeName ?? 'no node'}, not to ${node}`);
    if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') return refuse(`pod ${pod.namespace}/${pod.name} has finished`);
    return { spiffeId: workloadSpiffeId(this.o.ca.trustDomain, pod.namespace, p.spec?.serviceAccountName || 'default') };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
