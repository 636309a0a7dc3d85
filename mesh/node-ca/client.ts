// A node agent's client of its apiserver's node CA (mTLS with the node's certificate).
import * as grpc from '@grpc/grpc-js';
import { loadNodeCaApi, NODE_CA_NAME, type PodRef } from './proto.js';

type Unary<Req, Res> = (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;
interface NodeCaStub extends grpc.Client {
  SignX509SVID: Unary<{ pod: PodRef; csr: Buffer }, { spiffe_id: string; certificate: Buffer; bundle: Buffer; expires_at_unix_ms: number }>;
  SignJWTSVID: Unary<{ pod: PodRef; audience: string[] }, { spiffe_id: string; token: string; expires_at_unix_ms: number }>;
}

export class NodeCaClient {
  private readonly stub: NodeCaStub;

  constructor(endpoint: string, tls: { caPem: string; certPem: string; keyPem: string }) {
    const api = loadNodeCaApi() as unknown as { skein: { v1: { NodeCA: new (addr: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => NodeCaStub } } };
    // Verified by name, not by IP (TLS forbids IP server names); the node CA's certificate carries the name.
    this.stub = new api.skein.v1.NodeCA(endpoint, grpc.credentials.createSsl(Buffer.from(tls.caPem), Buffer.from(tls.keyPem), Buffer.from(tls.certPem)), { 'grpc.ssl_target_name_override': NODE_CA_NAME, 'grpc.default_authority': NODE_CA_NAME });
  }

  private call<Req, Res>(fn: Unary<Req, Res>, req: Req): Promise<Res> {
    return new Promise((resolve, reject) => fn.call(this.stub, req, (err, res) => (err ? reject(err) : resolve(res))));
  }

  signX509(pod: PodRef, csr: Buffer) {
    return this.call(this.stub.SignX509SVID, { pod, csr });
  }

  signJwt(pod: PodRef, audience: string[]) {
    return this.call(this.stub.SignJWTSVID, { pod, audience });
  }

  close(): void {
    this.stub.close();
  }
}
