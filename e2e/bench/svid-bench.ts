// Issue 6's and 15's benchmark: (1) X.509-SVID issuance on this machine, what a node agent and the node CA do
// per SVID (P-256 key + CSR on the node, CSR check + signing at the CA), against the native-crypto limit
// measured in the same run (the same four operations on Node's crypto with nothing else: key generation,
// CSR signature, its verification, the certificate signature), interleaved in rounds so that a shared
// machine's noise falls on both; node-forge with RSA-2048 as the baseline; (2) on the test bed (skipped with
// --pods 0), the time to first SVID for a new pod: from creating the pod to the SVID in hand, and the
// pod's first Workload API call alone (answered from the SVID its agent signed when the pod was bound).
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import forge from 'node-forge';

import { readTlv } from '../../mtls/der.js';
import { signX509Svid } from '../../mtls/svid.js';
import { createCA, newKeyAndCsr } from '../../mtls/x509.js';
import { workloadSocket } from '../../testbed/agents.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { waitFor } from '../../testbed/daemon.js';
import { clusterRest, tempStateDir, workloadProbe } from '../tests/helpers.js';
import { distribution, type Result } from './report.js';
import type { Pod } from '../../mesh/kube/objects.js';

const ID = 'spiffe://bench.skein/ns/default/sa/default';

/** The first field of a DER SEQUENCE: a CSR's certificationRequestInfo, a certificate's TBSCertificate. */
const signedPart = (der: Buffer) => {
  const t = readTlv(der, readTlv(der, 0).valueStart);
  return der.subarray(t.start, t.end);
};

/** The cryptography of one issuance and nothing else, on bytes of the real sizes. */
function nativeLimitOnce(caKey: KeyObject, info: Buffer, tbs: Buffer): void {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const csrSignature = sign('sha256', info, privateKey);
  if (!verify('sha256', info, publicKey, csrSignature)) throw new Error('limit: the CSR signature does not verify');
  sign('sha256', tbs, caKey);
}

/**
 * The limit plus the two conversions no issuance can skip with Node's crypto: the node exports the new
 * private key (the workload needs it; SEC1, the cheapest encoder) and the CA imports the CSR's point (JWK,
 * the cheapest decoder). What Skein spends beyond this is its own DER work and garbage.
 */
function nativeWithConversionsOnce(caKey: KeyObject, info: Buffer, tbs: Buffer): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const sec1 = privateKey.export({ format: 'der', type: 'sec1' });
  const csrSignature = sign('sha256', info, privateKey);
  const point = sec1.subarray(-64);
  const publicKey = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: point.subarray(0, 32).toString('base64url'), y: point.subarray(32).toString('base64url') }, format: 'jwk' });
  if (!verify('sha256', info, publicKey, csrSignature)) throw new Error('limit: the CSR signature does not verify');
  sign('sha256', tbs, caKey);
}

/** Skein's issuance and the native-crypto limits, in alternating rounds after a warm-up of each. */
async function nativeIssuance(n: number): Promise<{ skein: number[]; limit: number[]; converting: number[] }> {
  const ca = await createCA({ commonName: 'bench', ttlMs: 86_400_000, uri: 'spiffe://bench.skein' });
  const sample = await newKeyAndCsr();
  const info = signedPart(sample.csrDer);
  const tbs = signedPart((await signX509Svid(ca, { spiffeId: ID, csrDer: sample.csrDer })).certDer);
  const caKey = createPrivateKey(ca.keyPem);
  const issue = async () => signX509Svid(ca, { spiffeId: ID, csrDer: (await newKeyAndCsr()).csrDer });
  for (let i = 0; i < 200; i++) {
    await issue();
    nativeLimitOnce(caKey, info, tbs);
    nativeWithConversionsOnce(caKey, info, tbs);
  }
  const skein: number[] = [];
  const limit: number[] = [];
  const converting: number[] = [];
  const rounds = 10;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < n / rounds; i++) {
      const t0 = performance.now();
      await issue();
      skein.push(performance.now() - t0);
    }
    for (let i = 0; i < n / rounds; i++) {
      const t0 = performance.now();
      nativeLimitOnce(caKey, info, tbs);
      limit.push(performance.now() - t0);
    }
    for (let i = 0; i < n / rounds; i++) {
      const t0 = performance.now();
      nativeWithConversionsOnce(caKey, info, tbs);
      converting.push(performance.now() - t0);
    }
  }
  return { skein, limit, converting };
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

type AgentWorkload = { servedFromCache: number; servedAfterSigning: number; signCalls: number };

/**
 * New pods, each of a service account of its own (so every first call needs an SVID no other pod shares):
 * from creation to the SVID in hand, and the first Workload API call alone, from a process in the pod. The
 * agent signs each identity when the API binds its pod; how many first calls its cache answered is counted.
 */
async function firstSvids(pods: number): Promise<{ createToSvid: number[]; fetch: number[]; fromCache: number; signCalls: number }> {
  const stateDir = tempStateDir('bench-svid');
  const cluster = 'svid-a';
  try {
    await up({ stateDir, clusters: [{ name: cluster, id: 73 }], nodes: 1, echo: false });
    const rest = clusterRest(stateDir, cluster);
    await waitFor('the default service account', async () => ((await rest.get('/api/v1/namespaces/default/serviceaccounts/default')) ? true : undefined), 60_000);
    const agentUrl = readState(stateDir)!.clusters[0]!.agents[0]!;
    const agent = async () => (await (await fetch(`${agentUrl}/v1/workload`)).json()) as AgentWorkload;
    const createToSvid: number[] = [];
    const fetchMs: number[] = [];
    const socket = `unix://${workloadSocket(statePaths(stateDir).cluster(cluster), 1)}`;
    const before = await agent();
    for (let i = 0; i < pods; i++) {
      const name = `svid-${i}`;
      await rest.post('/api/v1/namespaces/default/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
      const t0 = performance.now();
      await rest.post('/api/v1/namespaces/default/pods', { metadata: { name, labels: { app: 'svid-bench' } }, spec: { serviceAccountName: name, containers: [{ name: 'c', image: 'ghcr.io/skein-mesh/skein-client:0.1.0', args: ['idle'] }] } });
      let pod: Pod;
      for (;;) {
        pod = await rest.get<Pod>(`/api/v1/namespaces/default/pods/${name}`);
        if (pod.status?.phase === 'Running') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const r = await workloadProbe(stateDir, cluster, pod, socket);
      if (!r.ok || r.ms === undefined) throw new Error(`no SVID for ${name}: ${r.details}`);
      createToSvid.push(performance.now() - t0);
      fetchMs.push(r.ms);
      await rest.delete(`/api/v1/namespaces/default/pods/${name}`, { gracePeriodSeconds: 0 });
    }
    const after = await agent();
    return { createToSvid, fetch: fetchMs, fromCache: after.servedFromCache - before.servedFromCache, signCalls: after.signCalls - before.signCalls };
  } finally {
    await down(stateDir);
  }
}

const median = (times: number[]) => [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
const round2 = (x: number) => Math.round(x * 100) / 100;

export async function svidBench(opts: { issuances: number; forgeIssuances: number; pods: number }): Promise<Result[]> {
  const loadBefore = loadavg()[0]!;
  const { skein, limit, converting } = await nativeIssuance(opts.issuances);
  const loadAfter = loadavg()[0]!;
  const rsa = forgeRsaIssuance(opts.forgeIssuances);
  const results: Result[] = [
    { name: 'X.509-SVIDs issued per second: Skein (ECDSA P-256)', unit: 'SVIDs/s', value: rate(skein), note: 'key + CSR on the node, CSR check + signing at the CA, one core (native crypto, DER by hand)' },
    distribution('  per SVID: Skein (ECDSA P-256)', 'ms', skein),
    { name: 'native-crypto limit per second (same run)', unit: 'SVIDs/s', value: rate(limit), note: 'P-256 key generation + CSR signature + its verification + certificate signature, nothing else' },
    distribution('  per SVID: native-crypto limit', 'ms', limit),
    { name: 'Skein / native-crypto limit', unit: 'ratio', value: round2(rate(skein) / rate(limit)), note: `of SVIDs/s, in alternating rounds; of p50s ${round2(median(limit) / median(skein))}` },
    { name: 'limit + key export and import per second', unit: 'SVIDs/s', value: rate(converting), note: `the limit plus SEC1 export of the new key and JWK import of the CSR point; Skein / this ${round2(rate(skein) / rate(converting))}` },
    distribution('  per SVID: limit + key export and import', 'ms', converting),
    { name: 'load average (1 min) over the issuance runs', unit: 'load', value: round2(loadAfter), note: `${round2(loadBefore)} before; ${cpus().length} CPUs, shared` },
    { name: 'X.509-SVIDs issued per second: node-forge (RSA-2048)', unit: 'SVIDs/s', value: rate(rsa), note: 'same steps; node-forge signs only RSA' },
    distribution('  per SVID: node-forge (RSA-2048)', 'ms', rsa),
  ];
  if (opts.pods > 0) {
    const { createToSvid, fetch, fromCache, signCalls } = await firstSvids(opts.pods);
    results.push(
      distribution('new pod: created -> first SVID in hand', 'ms', createToSvid, 'pod start on the test bed included'),
      distribution('new pod: first Workload API call -> SVID', 'ms', fetch, 'from a process in the running pod: connect, attestation, answer (target p99 <= 10 ms)'),
      { name: 'new pod: first calls answered from SVIDs signed at binding', unit: 'calls', value: fromCache, note: `of ${opts.pods} pods, each a service account of its own; ${signCalls} node CA calls in all` },
    );
  }
  return results;
}
