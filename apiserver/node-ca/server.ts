// The apiserver's signing service for its node agents (gRPC over mTLS). The caller is the node its
// certificate names (URI SAN urn:skein:mesh:<cluster>:node:<node>, signed by this cluster's mesh CA); it gets
// SVIDs, signed by the workload CA, only for pods the Kubernetes API binds to that node. The SPIFFE ID comes
// from the pod object the API returned (its namespace and service account), never from the request. The
// caller also renews its own node certificate here (RenewNodeIdentity), for its node only.
import * as grpc from '@grpc/grpc-js';

import type { ClusterCA } from '../../mtls/cluster-ca.js';
import { splitPemCertificates } from '../../mtls/trust-bundle.js';
import type { PemPair } from '../../mtls/x509.js';
import { signJwtSvid, signX509Svid, workloadSpiffeId } from '../../mtls/svid.js';
import { issueCertificate } from '../../mtls/x509.js';
import { issueNodeIdentityFor, nodeUri, nodeUser } from '../../mtls/mesh-identities.js';
import { RenewingCertificate } from '../../mtls/renewing-cert.js';
import { SwappableCredentials } from '../../mtls/swappable-credentials.js';
import { X509Certificate } from 'node:crypto';
import { isNotFound, type KubeRest } from '../../mesh/kube/rest.js';
import { Dns1123Subdomain, podPath, PodRef } from '../../mesh/kube/names.js';
import { firstIssue } from '../../mesh/schema/issue.js';
import { loadNodeCaApi, NODE_CA_NAME, type NodeCAHandlers } from '../../mesh/node-ca/proto.js';
import type { KubeNode, Pod } from '../../mesh/kube/objects.js';
import type { SignX509SVIDResponse } from '../../mesh/node-ca/generated/skein/v1/SignX509SVIDResponse.js';

type Refusal = { error: Partial<grpc.StatusObject> };

/** A PEM bundle as the Workload API carries one: the CAs' DER, concatenated. */
const bundleDerOf = (pem: string) => Buffer.concat(splitPemCertificates(pem).map((c) => new X509Certificate(c).raw));

/** Pods per batch call: a batch is the pods one node's API watch delivered together, never unbounded. */
const MAX_BATCH = 256;

export class NodeCaServer {
  private readonly server = new grpc.Server();
  readonly counts = { x509: 0, jwt: 0, denied: 0, invalid: 0, nodeIdentities: 0 };
  /** The workload CA that signs now and its trust domain's bundle (DER, concatenated): swapped by a rotation. */
  private workload: PemPair;
  private bundleDer: Buffer;
  private serving?: RenewingCertificate;

  constructor(
    private readonly o: { ca: ClusterCA; rest: Pick<KubeRest, 'get'>; svidTtlMs: number; jwtTtlMs: number; servingTtlMs: number; nodeIdentityTtlMs: number; log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void } },
  ) {
    this.workload = o.ca.workload;
    this.bundleDer = bundleDerOf(o.ca.workloadBundle);
    const signX509: NodeCAHandlers['SignX509SVID'] = (call, cb) =>
      void this.signX509(this.callerNode(call), call.request).then(
        (r) => ('error' in r ? cb(r.error) : cb(null, r.svid)),
        (err: Error) => cb(this.internal(err)),
      );
    const signX509Batch: NodeCAHandlers['SignX509SVIDs'] = (call, cb) => {
      const requests = call.request.requests;
      if (requests.length > MAX_BATCH) return cb(this.refuse(grpc.status.INVALID_ARGUMENT, `requests: at most ${MAX_BATCH} per call, got ${requests.length}; split the batch`).error);
      const node = this.callerNode(call);
      // Each request on its own: one pod gone (or refused) does not fail the others.
      void Promise.all(requests.map((r) => this.signX509(node, r).catch((err: Error) => ({ error: this.internal(err) }))))
        .then((results) => cb(null, { results: results.map((r) => ('error' in r ? { error: { code: r.error.code ?? grpc.status.INTERNAL, details: r.error.details ?? '' } } : { svid: r.svid })) }));
    };
    const signJwt: NodeCAHandlers['SignJWTSVID'] = (call, cb) =>
      void this.authorize(this.callerNode(call), call.request.pod)
        .then(async (a) => {
          if ('error' in a) return cb(a.error);
          const jwt = await this.signing(() => signJwtSvid(this.workload, { spiffeId: a.spiffeId, audience: call.request.audience, ttlMs: this.o.jwtTtlMs }));
          if ('error' in jwt) return cb(jwt.error);
          this.counts.jwt++;
          cb(null, { spiffe_id: a.spiffeId, token: jwt.ok.token, expires_at_unix_ms: jwt.ok.expiresAt.getTime() });
        })
        .catch((err: Error) => cb(this.internal(err)));
    const renewNode: NodeCAHandlers['RenewNodeIdentity'] = (call, cb) =>
      void this.renewNodeIdentity(call, call.request.csr_pem).then((r) => ('error' in r ? cb(r.error) : cb(null, r.ok)), (err: Error) => cb(this.internal(err)));
    const handlers: NodeCAHandlers = { SignX509SVID: signX509, SignX509SVIDs: signX509Batch, SignJWTSVID: signJwt, RenewNodeIdentity: renewNode };
    this.server.addService(loadNodeCaApi().NodeCA.service, handlers);
  }

  /** Signs with `signing` from the next request on (a CA rotation's activate); answers carry `bundlePem`. */
  setWorkloadCa(signing: PemPair, bundlePem: string): void {
    this.workload = signing;
    this.bundleDer = bundleDerOf(bundlePem);
  }

  /** Authorizes one request, then signs; a refusal or a bad CSR is a status, never an exception. */
  private async signX509(node: string | undefined, request: { pod?: unknown; csr: Buffer }): Promise<{ svid: SignX509SVIDResponse } | Refusal> {
    const a = await this.authorize(node, request.pod);
    if ('error' in a) return a;
    const svid = await this.signing(() => signX509Svid(this.workload, { spiffeId: a.spiffeId, csrDer: request.csr, ttlMs: this.o.svidTtlMs }));
    if ('error' in svid) return svid;
    this.counts.x509++;
    return { svid: { spiffe_id: a.spiffeId, certificate: svid.ok.certDer, bundle: this.bundleDer, expires_at_unix_ms: svid.ok.expiresAt.getTime() } };
  }

  /** What the signer refuses (a CSR that is not one, a SAN it may not ask for) is the caller's error. */
  private async signing<T>(sign: () => Promise<T>): Promise<{ ok: T } | Refusal> {
    try {
      return { ok: await sign() };
    } catch (err) {
      this.counts.invalid++;
      return { error: { code: grpc.status.INVALID_ARGUMENT, details: (err as Error).message } };
    }
  }

  private internal(err: Error): Partial<grpc.StatusObject> {
    this.o.log.warn({ err: err.message }, 'node CA request failed');
    return { code: grpc.status.INTERNAL, details: 'the node CA failed to handle the request' };
  }

  /**
   * A node certificate for the caller's own node, for the key of its request, for the policy's lifetime. The
   * caller is the node its certificate names, and only while that certificate is valid now (a channel opened
   * before it expired outlives it), names the node both ways (CN and URI SAN), is signed by the mesh CA in use
   * (one from a retired CA renews nothing), and the node still exists.
   */
  private async renewNodeIdentity(call: grpc.ServerUnaryCall<unknown, unknown>, csrPem: string): Promise<{ ok: { certificate_pem: string; ca_pem: string; expires_at_unix_ms: number } } | Refusal> {
    const node = this.callerNode(call);
    const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
    if (!node || !raw || !Dns1123Subdomain.safeParse(node).success) return this.refuse(grpc.status.PERMISSION_DENIED, `the client certificate names no node of cluster ${this.o.ca.cluster} (want URI SAN ${nodeUri(this.o.ca.cluster, '<node>')})`);
    const caller = new X509Certificate(raw);
    const now = Date.now();
    if (Date.parse(caller.validTo) <= now || Date.parse(caller.validFrom) > now) return this.refuse(grpc.status.PERMISSION_DENIED, `node ${node}: the client certificate (serial ${caller.serialNumber}) is not valid now (${caller.validFrom} to ${caller.validTo}); file a new request (the agent's init step)`);
    if (!caller.verify(new X509Certificate(this.o.ca.mesh.certPem).publicKey)) return this.refuse(grpc.status.PERMISSION_DENIED, `node ${node}: the client certificate is not signed by the mesh CA in use; file a new request (the agent's init step)`);
    if (caller.subject !== `CN=${nodeUser(node)}`) return this.refuse(grpc.status.PERMISSION_DENIED, `the client certificate names "${caller.subject}" but node ${node} in its URI SAN`);
    try {
      await this.o.rest.get<KubeNode>(`/api/v1/nodes/${encodeURIComponent(node)}`);
    } catch (err) {
      if (isNotFound(err)) return this.refuse(grpc.status.PERMISSION_DENIED, `node ${node} does not exist`);
      return { error: { code: grpc.status.UNAVAILABLE, details: `the Kubernetes API: ${(err as Error).message}` } };
    }
    // The request proves its key and names exactly node-<node> (issueForRequest); the rest comes from here.
    const issued = await this.signing(() => issueNodeIdentityFor(this.o.ca, node, csrPem, this.o.nodeIdentityTtlMs));
    if ('error' in issued) {
      this.o.log.warn({ node, details: issued.error.details }, 'node CA refused a node identity renewal');
      return issued;
    }
    this.counts.nodeIdentities++;
    const cert = new X509Certificate(issued.ok);
    this.o.log.info({ node, serial: cert.serialNumber, notAfter: cert.validTo }, 'renewed a node identity');
    return { ok: { certificate_pem: issued.ok, ca_pem: this.o.ca.mesh.certPem, expires_at_unix_ms: Date.parse(cert.validTo) } };
  }

  /** The node the caller's certificate names (URI SAN of this cluster's node identity), if any. */
  private callerNode(call: grpc.ServerUnaryCall<unknown, unknown>): string | undefined {
    const san = call.getAuthContext()?.sslPeerCertificate?.subjectaltname ?? '';
    const prefix = `URI:${nodeUri(this.o.ca.cluster, '')}`;
    return san.split(', ').find((s) => s.startsWith(prefix))?.slice(prefix.length);
  }

  /**
   * Serves on host:port with a serving certificate for `ips` from the mesh CA, renewed at half its lifetime
   * (`servingTtlMs`) without a restart: new handshakes get the new one, open channels keep going. Resolves the port.
   */
  async listen(host: string, port: number, ips: string[]): Promise<number> {
    const issue = () => issueCertificate(this.o.ca.mesh, { dnsNames: [NODE_CA_NAME], ipAddresses: ips, usage: 'server', ttlMs: this.o.servingTtlMs });
    this.serving = await RenewingCertificate.start({ what: 'the node CA serving certificate', issue, onRenew: (c) => creds.setIdentity(c), log: this.o.log });
    const creds = new SwappableCredentials(this.o.ca.mesh.certPem, this.serving.current);
    return new Promise((resolve, reject) => this.server.bindAsync(`${host}:${port}`, creds.serverCredentials, (err, bound) => (err ? reject(err) : resolve(bound))));
  }

  /** The serving certificate now (serial, expiry) and how often it was renewed, for /status and tests. */
  servingCertificate(): { serial: string; notAfter: string; renewals: number } | undefined {
    const s = this.serving;
    return s && { serial: s.current.serial, notAfter: new Date(s.current.notAfterMs).toISOString(), renewals: s.renewals };
  }

  private refuse(code: grpc.status, details: string): Refusal {
    if (code === grpc.status.INVALID_ARGUMENT) this.counts.invalid++;
    else this.counts.denied++;
    this.o.log.warn({ details }, 'node CA refused a request');
    return { error: { code, details } };
  }

  /** The node the caller's certificate names, and the pod's SPIFFE ID if the pod is bound to that node. */
  private async authorize(node: string | undefined, requested: unknown): Promise<{ spiffeId: string } | Refusal> {
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
    this.serving?.stop();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}
