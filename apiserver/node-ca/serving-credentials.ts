// gRPC server credentials whose certificate and trusted CA can change while the server runs: grpc-js swaps
// the TLS server's secure context on every update (http2 setSecureContext), so new handshakes get the new
// certificate and connections already open keep theirs. A certificate provider of our own (grpc-js's
// experimental API), fed from memory rather than watched files.
import * as grpc from '@grpc/grpc-js';

type CaListener = Parameters<grpc.experimental.CertificateProvider['addCaCertificateListener']>[0];
type IdentityListener = Parameters<grpc.experimental.CertificateProvider['addIdentityCertificateListener']>[0];

export class SwappableServerCredentials implements grpc.experimental.CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  /** What grpc-js binds; it requires (and verifies against the CA) a client certificate. */
  readonly credentials: grpc.ServerCredentials;

  constructor(
    private ca: string,
    private identity: { certPem: string; keyPem: string },
  ) {
    // One object plays both providers: grpc-js's factory names its parameters (ca, identity) but hands them to
    // a constructor that takes (identity, ca), so passing the same provider twice is the unambiguous call.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this, this, true);
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
