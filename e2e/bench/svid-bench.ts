// Issue 6's benchmark: (1) X.509-SVID issuance on this machine, what a node agent and the node CA do per
// SVID (P-256 key + CSR on the node, CSR check + signing at the CA), side by side with the same issuance
// done with node-forge and RSA-2048; (2) on the test bed, the time to first SVID for a new pod: from
// creating the pod to the SVID in hand, and the Workload API call alone (attestation, node CA round trip).
import { performance } from 'node:perf_hooks';
import forge from 'node-forge';

import { signX509Svid } from '../../mtls/svid.js';
import { createCA, newKeyAndCsr } from '../../mtls/x509.js';
import { workloadSocket } from '../../testbed/agents.js';
import { statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { waitFor } from '../../testbed/daemon.js';
import { clusterRest, tempStateDir, workloadProbe } from '../tests/helpers.js';
import { distribution, type Result } from './report.js';
import type { Pod } from '../../mesh/kube/objects.js';

const ID = 'spiffe://bench.skein/ns/default/sa/default';

async function ecdsaIssuance(n: number): Promise<number[]> {
  const ca = await createCA({ commonName: 'bench', ttlMs: 86_400_000, uri: 'spiffe://bench.skein' });
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const { csrDer } = await newKeyAndCsr();
    await signX509Svid(ca, { spiffeId: ID, csrDer });
    times.push(performance.now() - t0);
  }
  return times;
}

/** The same steps with node-forge, whose certificates can only be RSA. */
function forgeRsaIssuance(n: number): number[] {
  const caKeys = forge.pki.rsa.generateKeyPair(2048);
  const caCert = forge.pki.createCertificate();
  caCert.publicKey = caKeys.publicKey;
  caCert.serialNumber = '01';
  caCert.validity.notBefore = new Date();
  caCert.validity.notAfter = new Date(Date.now() + 86_400_000);
  caCert.setSubject([{ name: 'commonName', value: 'bench' }]);
  caCert.setIssuer([{ name: 'commonName', value: 'bench' }]);
  caCert.setExtensions([{ name: 'basicConstraints', cA: true }]);
  caCert.sign(caKeys.privateKey, forge.md.sha256.create());
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const keys = forge.pki.rsa.generateKeyPair(2048);
    const csr = forge.pki.createCertificationRequest();
    csr.publicKey = keys.publicKey;
    csr.sign(keys.privateKey, forge.md.sha256.create());
    if (!csr.verify()) throw new Error('forge CSR does not verify');
    const cert = forge.pki.createCertificate();
    cert.publicKey = csr.publicKey!;
    cert.serialNumber = (i + 2).toString(16).padStart(2, '0');
    cert.validity.notBefore = new Date();
    cert.validity.notAfter = new Date(Date.now() + 3600_000);
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', critical: true, digitalSignature: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', critical: true, altNames: [{ type: 6, value: ID }] },
    ]);
    cert.sign(caKeys.privateKey, forge.md.sha256.create());
    times.push(performance.now() - t0);
  }
  return times;
}

const rate = (times: number[]) => Math.round((times.length / times.reduce((a, b) => a + b, 0)) * 1000 * 10) / 10;

async function firstSvids(pods: number): Promise<{ createToSvid: number[]; fetch: number[] }> {
  const stateDir = tempStateDir('bench-svid');
  const cluster = 'svid-a';
  try {
    await up({ stateDir, clusters: [{ name: cluster, id: 73 }], nodes: 1, echo: false });
    const rest = clusterRest(stateDir, cluster);
    await waitFor('the default service account', async () => ((await rest.get('/api/v1/namespaces/default/serviceaccounts/default')) ? true : undefined), 60_000);
    const createToSvid: number[] = [];
    const fetch: number[] = [];
    const socket = `unix://${workloadSocket(statePaths(stateDir).cluster(cluster), 1)}`;
    for (let i = 0; i < pods; i++) {
      const name = `svid-${i}`;
      const t0 = performance.now();
      await rest.post('/api/v1/namespaces/default/pods', { metadata: { name, labels: { app: 'svid-bench' } }, spec: { containers: [{ name: 'c', image: 'ghcr.io/skein-mesh/skein-client:0.1.0', args: ['idle'] }] } });
      let pod: Pod;
      for (;;) {
        pod = await rest.get<Pod>(`/api/v1/namespaces/default/pods/${name}`);
        if (pod.status?.phase === 'Running') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const r = await workloadProbe(stateDir, cluster, pod, socket);
      if (!r.ok || r.ms === undefined) throw new Error(`no SVID for ${name}: ${r.details}`);
      createToSvid.push(performance.now() - t0);
      fetch.push(r.ms);
      await rest.delete(`/api/v1/namespaces/default/pods/${name}`, { gracePeriodSeconds: 0 });
    }
    return { createToSvid, fetch };
  } finally {
    await down(stateDir);
  }
}

export async function svidBench(opts: { issuances: number; forgeIssuances: number; pods: number }): Promise<Result[]> {
  const ecdsa = await ecdsaIssuance(opts.issuances);
  const rsa = forgeRsaIssuance(opts.forgeIssuances);
  const { createToSvid, fetch } = await firstSvids(opts.pods);
  return [
    { name: 'X.509-SVIDs issued per second: Skein (ECDSA P-256)', unit: 'SVIDs/s', value: rate(ecdsa), note: 'key + CSR on the node, CSR check + signing at the CA, one core' },
    distribution('  per SVID: Skein (ECDSA P-256)', 'ms', ecdsa),
    { name: 'X.509-SVIDs issued per second: node-forge (RSA-2048)', unit: 'SVIDs/s', value: rate(rsa), note: 'same steps; node-forge signs only RSA' },
    distribution('  per SVID: node-forge (RSA-2048)', 'ms', rsa),
    distribution('new pod: created -> first SVID in hand', 'ms', createToSvid, 'pod start on the test bed included'),
    distribution('new pod: Workload API call -> first SVID', 'ms', fetch, 'attestation + node CA round trip + signing'),
  ];
}
