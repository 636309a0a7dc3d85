// A node agent's client of its apiserver's node CA (mTLS with the node's certificate: fixed PEMs, or
// credentials whose certificate is renewed while the channel lives, mtls/swappable-credentials.ts).
import * as grpc from '@grpc/grpc-js';
import type { RenewNodeIdentityResponse__Output } from './generated/skein/v1/RenewNodeIdentityResponse.js';
import type { SignJWTSVIDResponse__Output } from './generated/skein/v1/SignJWTSVIDResponse.js';
import type { SignX509SVIDResult__Output } from './generated/skein/v1/SignX509SVIDResult.js';
import type { SignX509SVIDResponse__Output } from './generated/skein/v1/SignX509SVIDResponse.js';
import { loadNodeCaApi, NODE_CA_NAME, type NodeCAClient, type PodRef } from './proto.js';

export class NodeCaClient {
  private readonly stub: NodeCAClient;

  constructor(endpoint: string, tls: { caPem: string; certPem: string; keyPem: string } | grpc.ChannelCredentials) {
    const credentials = tls instanceof grpc.ChannelCredentials ? tls : grpc.credentials.createSsl(Buffer.from(tls.caPem), Buffer.from(tls.keyPem), Buffer.from(tls.certPem));
    // Verified by name, not by IP (TLS forbids IP server names); the node CA's certificate carries the name.
    this.stub = new (loadNodeCaApi().NodeCA)(endpoint, credentials, {
      'grpc.ssl_target_name_override': NODE_CA_NAME,
      'grpc.default_authority': NODE_CA_NAME,
      // A connection of its own, never one another channel with equal credentials opened: a new client is
      // how an agent gets a new handshake, presenting its renewed certificate (identity-source.ts).
      'grpc.use_local_subchannel_pool': 1,
    });
  }

  signX509(pod: PodRef, csr: Buffer): Promise<SignX509SVIDResponse__Output> {
    return new Promise((resolve, reject) => this.stub.SignX509SVID({ pod, csr }, (err, res) => (err || !res ? reject(err ?? new Error('node CA: empty answer')) : resolve(res))));
  }

  /** One call for many pods; each result is the SVID or why that pod's was refused, in request order. */
  signX509Batch(requests: { pod: PodRef; csr: Buffer }[]): Promise<SignX509SVIDResult__Output[]> {
    return new Promise((resolve, reject) =>
      this.stub.SignX509SVIDs({ requests }, (err, res) => (err || !res ? reject(err ?? new Error('node CA: empty answer')) : res.results.length !== requests.length ? reject(new Error(`node CA: ${res.results.length} results for ${requests.length} requests`)) : resolve(res.results))),
    );
  }

  /** Opens the channel now (TLS handshake included), so the first signing pays only its round trip. */
  connect(): void {
    this.stub.getChannel().getConnectivityState(true);
  }

  signJwt(pod: PodRef, audience: string[]): Promise<SignJWTSVIDResponse__Output> {
    return new Promise((resolve, reject) => this.stub.SignJWTSVID({ pod, audience }, (err, res) => (err || !res ? reject(err ?? new Error('node CA: empty answer')) : resolve(res))));
  }

  /** A new node certificate for the key of `csrPem`, authorized by the certificate this channel presents. */
  renewNodeIdentity(csrPem: string): Promise<RenewNodeIdentityResponse__Output> {
    return new Promise((resolve, reject) => this.stub.RenewNodeIdentity({ csr_pem: csrPem }, { deadline: Date.now() + 30_000 }, (err, res) => (err || !res ? reject(err ?? new Error('node CA: empty answer')) : resolve(res))));
  }

  close(): void {
    this.stub.close();
  }
}
