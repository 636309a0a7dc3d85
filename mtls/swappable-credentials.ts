// gRPC credentials whose certificate and trusted CA can change while the process runs. A server's: grpc-js
// swaps the TLS server's secure context on every update (http2 setSecureContext). A client's (channel): grpc-js
// builds each connection's secure context from the provider's latest update when it connects. Either way new
// handshakes get the new certificate and connections already open keep theirs. A certificate provider of our
// own (grpc-js's experimental API), fed from memory rather than watched files.
import * as grpc from '@grpc/grpc-js';

type CaListener = Parameters<grpc.experimental.CertificateProvider['addCaCertificateListener']>[0];
type IdentityListener = Parameters<grpc.experimental.CertificateProvider['addIdentityCertificateListener']>[0];

export class SwappableCredentials implements grpc.experimental.CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private server?: grpc.ServerCredentials;
  private channel?: grpc.ChannelCredentials;

  constructor(
    private ca: string,
    private identity: { certPem: string; keyPem: string },
  ) {}

  /** What a grpc-js server binds; it requires (and verifies against the CA) a client certificate. */
  get serverCredentials(): grpc.ServerCredentials {
    // One object plays both providers: grpc-js's factory names its parameters (ca, identity) but hands them to
    // a constructor that takes (identity, ca), so passing the same provider twice is the unambiguous call.
    this.server ??= grpc.experimental.createCertificateProviderServerCredentials(this, this, true);
    return this.server;
  }

  /** What a grpc-js client (channel) connects with: the current certificate, the server verified by the CA. */
  get channelCredentials(): grpc.ChannelCredentials {
    this.channel ??= grpc.experimental.createCertificateProviderChannelCredentials(this, this);
    return this.channel;
  }

  /** The CA certificates the peer is verified by now. */
  get caPem(): string {
    return this.ca;
  }

  /** The certificate new handshakes present now. */
  get current(): { certPem: string; keyPem: string } {
    return this.identity;
  }

  /** New handshakes present this certificate from now on. */
  setIdentity(identity: { certPem: string; keyPem: string }): void {
    this.identity = identity;
    for (const l of this.identityListeners) l(this.identityUpdate());
  }

  /** New handshakes verify client certificates against these CA certificates (PEM, one or more). */
  setCa(caPem: string): void {
    this.ca = caPem;
    for (const l of this.caListeners) l({ caCertificate: Buffer.from(caPem) });
  }

  private identityUpdate() {
    return { certificate: Buffer.from(this.identity.certPem), privateKey: Buffer.from(this.identity.keyPem) };
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    // Later, not now: grpc-js registers its own watcher only after this returns, and would miss it.
    queueMicrotask(() => this.caListeners.has(listener) && listener({ caCertificate: Buffer.from(this.ca) }));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => this.identityListeners.has(listener) && listener(this.identityUpdate()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}
