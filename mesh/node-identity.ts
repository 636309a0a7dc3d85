// The contract between a node agent and its cluster's skein-apiserver for the agent's node identity in a
// Kubernetes install (the Helm chart): the agent files a Kubernetes CertificateSigningRequest of signer
// skein.io/node from its pod's service-account token; kube-apiserver records who asked (the agent's service
// account, and the node and pod its token is bound to); skein-apiserver certifies only that node.
export const NODE_SIGNER = 'skein.io/node';
/** The service account the chart runs agents as; nobody else gets a node identity. */
export const AGENT_SERVICE_ACCOUNT = { namespace: 'skein-system', name: 'skein-agent' } as const;
export const agentUsername = () => `system:serviceaccount:${AGENT_SERVICE_ACCOUNT.namespace}:${AGENT_SERVICE_ACCOUNT.name}`;
/** What kube-apiserver records of a pod-bound token in the request's spec.extra. */
export const TOKEN_EXTRA = {
  nodeName: 'authentication.kubernetes.io/node-name',
  podName: 'authentication.kubernetes.io/pod-name',
  podUid: 'authentication.kubernetes.io/pod-uid',
} as const;
export const NODE_CSR_USAGES = ['digital signature', 'client auth'] as const;
export const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';

/** status.certificate's PEM: the node certificate, then the mesh CA that signed it. */
export function splitChain(pem: string): { leafPem: string; caPem: string } {
  const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
  if (certs.length !== 2) throw new Error(`the issued chain holds ${certs.length} certificates, expected the node certificate and its CA`);
  return { leafPem: certs[0], caPem: certs[1]! };
}
