// The apiserver's signing service for its node agents (gRPC over mTLS). The caller is the node its
// certificate names (URI SAN urn:skein:mesh:<cluster>:node:<node>, signed by this cluster's mesh CA); it gets
// SVIDs, signed by the workload CA, only for pods the Kubernetes API binds to that node. The SPIFFE ID comes
// from the pod object the API returned (its namespace and service account), never from the request.
import * as grpc from '@grpc/grpc-js';

import type { ClusterCA } from '../../mtls/cluster-ca.js';
import { signJwtSvid, signX509Svid, workloadSpiffeId } from '../../mtls/svid.js';
import { issueCertificate } from '../../mtls/x509.js';
import { nodeUri } from '../../mtls/mesh-identities.js';
import { X509Certificate } from 'node:crypto';
import { isNotFound, type KubeRest } from '../../mesh/kube/rest.js';
import { Dns1123Subdomain, podPath, PodRef } from '../../mesh/kube/names.js';
import { firstIssue } from '../../mesh/schema/issue.js';
import { loadNodeCaApi, NODE_CA_NAME, type NodeCAHandlers } from '../../mesh/node-ca/proto.js';
import type { Pod } from '../../mesh/kube/objects.js';

type Refusal = { error: Partial<grpc.StatusObject> };

export class NodeCaServer {
  private readonly server = new grpc.Server();
  readonly counts = { x509: 0, jwt: 0, denied: 0, invalid: 0 };
  private readonly bundleDer: Buffer;

  constructor(
    private readonly o: { ca: ClusterCA; rest: KubeRest; svidTtlMs: number; jwtTtlMs: number; log: { warn: (o: object, m: string) => void } },
  ) {
    this.bundleDer = new X509Certificate(o.ca.workload.certPem).raw;
    const signX509: NodeCAHandlers['SignX509SVID'] = (call, cb) =>
      this.handle(call, call.request.pod, cb, async (spiffeId) => {
        const svid = await signX509Svid(this.o.ca.workload, { spiffeId, csrDer: call.request.csr, ttlMs: this.o.svidTtlMs });
        this.counts.x509++;
        return { spiffe_id: spiffeId, certificate: svid.certDer, bundle: this.bundleDer, expires_at_unix_ms: svid.expiresAt.getTime() };
      });
    const signJwt: NodeCAHandlers['SignJWTSVID'] = (call, cb) =>
      this.handle(call, call.request.pod, cb, async (spiffeId) => {
        const jwt = await signJwtSvid(this.o.ca.workload, { spiffeId, audience: call.request.audience, ttlMs: this.o.jwtTtlMs });
        this.counts.jwt++;
        return { spiffe_id: spiffeId, token: jwt.token, expires_at_unix_ms: jwt.expiresAt.getTime() };
      });
    const handlers: NodeCAHandlers = { SignX509SVID: signX509, SignJWTSVID: signJwt };
    this.server.addService(loadNodeCaApi().NodeCA.service, handlers);
  }

  /** Authorizes, then signs; every failure becomes a gRPC status, never an exception or a rejection. */
  private handle<Res>(call: grpc.ServerUnaryCall<unknown, Res>, pod: unknown, cb: grpc.sendUnaryData<Res>, sign: (spiffeId: string) => Promise<Res>): void {
    this.authorize(call, pod)
      .then(async (a) => {
        if ('error' in a) return cb(a.error);
        try {
          cb(null, await sign(a.spiffeId));
        } catch (err) {
          this.counts.invalid++;
          cb({ code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message });
        }
      })
      .catch((err: Error) => {
        this.o.log.warn({ err: err.message }, 'node CA request failed');
        cb({ code: grpc.status.INTERNAL, details: 'the node CA failed to handle the request' });
      });
  }

  /** Serves on host:port with a serving certificate for `ips` from the mesh CA; resolves the port. */
  async listen(host: string, port: number, ips: string[]): Promise<number> {
    const serving = await issueCertificate(this.o.ca.mesh, { dnsNames: [NODE_CA_NAME], ipAddresses: ips, usage: 'server', ttlMs: 365 * 24 * 3600_000 });
    const creds = grpc.ServerCredentials.createSsl(Buffer.from(this.o.ca.mesh.certPem), [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], true);
    return new Promise((resolve, reject) => this.server.bindAsync(`${host}:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound))));
  }

  private refuse(code: grpc.status, details: string): Refusal {
    if (code === grpc.status.INVALID_ARGUMENT) this.counts.invalid++;
    else this.counts.denied++;
    this.o.log.warn({ details }, 'node CA refused a request');
    return { error: { code, details } };
  }

  /** The node the caller's certificate names, and the pod's SPIFFE ID if the pod is bound to that node. */
  private async authorize(call: grpc.ServerUnaryCall<unknown, unknown>, requested: unknown): Promise<{ spiffeId: string } | Refusal> {
    const san = call.getAuthContext()?.sslPeerCertificate?.subjectaltname ?? '';
    const prefix = `URI:${nodeUri(this.o.ca.cluster, '')}`;
    const node = san.split(', ').find((s) => s.startsWith(prefix))?.slice(prefix.length);
    if (!node || !Dns1123Subdomain.safeParse(node).success) return this.refuse(grpc.status.PERMISSION_DENIED, `the client certificate names no node of cluster ${this.o.ca.cluster} (want URI SAN ${nodeUri(this.o.ca.cluster, '<node>')})`);
    const ref = PodRef.safeParse(requested);
    if (!ref.success) return this.refuse(grpc.status.INVALID_ARGUMENT, firstIssue(ref.error, 'pod.'));
    const { namespace, name, uid } = ref.data;
    let p: Pod;
    try {
      p = await this.o.rest.get<Pod>(podPath(namespace, name));
    } catch (err) {
      if (isNotFound(err)) return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name} does not exist`);
      return { error: { code: grpc.status.UNAVAILABLE, details: `the Kubernetes API: ${(err as Error).message}` } };
    }
    const m = p.metadata;
    // The API answered for the path asked; check anyway that it is the very object the caller named.
    if (m?.namespace !== namespace || m.name !== name) return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name}: the API returned ${m?.namespace}/${m?.name}`);
    if (m.uid !== uid) return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name} has uid ${m.uid}, not ${uid} (it was replaced)`);
    if (p.spec?.nodeName !== node) return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name} is bound to ${p.spec?.nodeName ?? 'no node'}, not to ${node}`);
    if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name} has finished`);
    const sa = p.spec?.serviceAccountName || 'default';
    if (!Dns1123Subdomain.safeParse(sa).success) return this.refuse(grpc.status.PERMISSION_DENIED, `pod ${namespace}/${name} names service account "${sa}", not a valid name`);
    return { spiffeId: workloadSpiffeId(this.o.ca.trustDomain, m.namespace, sa) };
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
