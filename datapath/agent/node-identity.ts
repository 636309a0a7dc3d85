// The agent's init step in a Kubernetes install (the Helm chart's init container): makes the node's key
// here, files a CertificateSigningRequest of signer skein.io/node with this pod's service-account token,
// waits for skein-apiserver to certify it (apiserver/node-csr.ts checks the token's node and pod), and
// writes node.key, node.crt and the mesh CA (ca.crt) for the agent. The key never leaves the pod.
import type { X509Certificate } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../../mesh/kube/rest.js';
import { Dns1123Subdomain } from '../../mesh/kube/names.js';
import type { CertificateSigningRequest } from '../../mesh/kube/objects.js';
import { CSR_PATH, NODE_CSR_USAGES, NODE_SIGNER, splitChain } from '../../mesh/node-identity.js';
import { checkIssuedNodeIdentity, nodeIdentityRequest, nodeUser } from '../../mtls/mesh-identities.js';

const POLL_MS = 500;

/** The issued chain once the request is decided; throws with the denial's reason. */
async function issued(rest: KubeRest, name: string, deadline: number): Promise<string> {
  for (;;) {
    const csr = await rest.get<CertificateSigningRequest>(`${CSR_PATH}/${encodeURIComponent(name)}`);
    const refused = (csr.status?.conditions ?? []).find((c) => c.type === 'Denied' || c.type === 'Failed');
    if (refused) throw new Error(`certificate request ${name} ${refused.type.toLowerCase()}: ${refused.message ?? refused.reason ?? 'no reason given'}`);
    if (csr.status?.certificate) return Buffer.from(csr.status.certificate, 'base64').toString('utf8');
    if (Date.now() > deadline) throw new Error(`certificate request ${name} was not decided in time: is skein-apiserver running with --sign-node-requests?`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'node-name': { type: 'string' }, out: { type: 'string' }, timeout: { type: 'string', default: '300' }, kubeconfig: { type: 'string' } } });
  const node = Dns1123Subdomain.safeParse(values['node-name'] ?? process.env.NODE_NAME);
  if (!node.success) throw new Error(`--node-name (or NODE_NAME from spec.nodeName): ${node.error.issues[0]?.message}`);
  if (!values.out) throw new Error('--out is required (the directory the agent reads its node identity from)');
  const timeoutS = Number(values.timeout);
  if (!Number.isInteger(timeoutS) || timeoutS < 1) throw new Error(`--timeout "${values.timeout}": give whole seconds, for example 300`);
  const kc = new KubeConfig();
  if (values.kubeconfig) kc.loadFromFile(values.kubeconfig);
  else kc.loadFromCluster();
  const rest = new KubeRest(kc);

  const { keyPem, csrPem } = await nodeIdentityRequest(node.data);
  const created = await rest.post<CertificateSigningRequest>(CSR_PATH, {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { generateName: `skein-${nodeUser(node.data)}-`.slice(0, 200) },
    spec: { request: Buffer.from(csrPem).toString('base64'), signerName: NODE_SIGNER, usages: [...NODE_CSR_USAGES] },
  });
  const name = created.metadata!.name!;
  console.log(`filed certificate request ${name} for node ${node.data}`);
  const { leafPem, caPem } = splitChain(await issued(rest, name, Date.now() + timeoutS * 1000));
  // What came back must be ours: for our node, by the CA that came with it, for our key.
  let leaf: X509Certificate;
  try {
    leaf = checkIssuedNodeIdentity({ certPem: leafPem, caPem }, node.data, keyPem);
  } catch (err) {
    throw new Error(`certificate request ${name}: ${(err as Error).message}`, { cause: err });
  }
  mkdirSync(values.out, { recursive: true });
  // Group-readable: the agent container runs as root without CAP_DAC_OVERRIDE and reads it through the pod's
  // fsGroup, which owns this pod-private in-memory volume.
  writeFileSync(join(values.out, 'node.key'), keyPem, { mode: 0o640 });
  writeFileSync(join(values.out, 'node.crt'), leafPem);
  writeFileSync(join(values.out, 'ca.crt'), caPem);
  console.log(`node identity ${nodeUser(node.data)} written to ${values.out} (valid until ${leaf.validTo})`);
}

main().catch((err: Error) => {
  console.error(`skein-agent node-identity: ${err.message}`);
  process.exit(1);
});
