// Issue 6's and 15's benchmark: (1) X.509-SVID issuance on this machine, what a node agent and the node CA do
// per SVID (P-256 key + CSR on the node, CSR check + signing at the CA), against the native-crypto limit
// measured in the same run (the same four operations on Node's crypto with nothing else: key generation,
// CSR signature, its verification, the certificate signature), interleaved in rounds so that a shared
// machine's noise falls on both; node-forge with RSA-2048 as the baseline; (2) on the test bed (skipped with
// --pods 0), the time to first SVID for a new pod: from creating the pod to the SVID in hand, and the
// pod's first Workload API call alone (answered from the SVID its agent signed when the pod was bound).
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { performance, PerformanceObserver } from 'node:perf_hooks';
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

type Phase = 'skein' | 'limit' | 'converting';
type GcPauses = Record<Phase, { count: number; totalMs: number; maxMs: number }>;

/** Skein's issuance and the native-crypto limits, in alternating rounds after a warm-up of each; GC pauses per kind of round. */
async function nativeIssuance(n: number): Promise<{ skein: number[]; limit: number[]; converting: number[]; gc: GcPauses }> {
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
  // Which kind of round each GC pause fell in: does the garbage of Skein's own work make its tail?
  const windows: { phase: Phase; start: number; end: number }[] = [];
  const pauses: { start: number; duration: number }[] = [];
  const gcObserver = new PerformanceObserver((list) => pauses.push(...list.getEntries().map((e) => ({ start: e.startTime, duration: e.duration }))));
  gcObserver.observe({ entryTypes: ['gc'] });
  const rounds = 10;
  const round = async (phase: Phase, times: number[], once: () => unknown) => {
    const start = performance.now();
    for (let i = 0; i < n / rounds; i++) {
      const t0 = performance.now();
      await once();
      times.push(performance.now() - t0);
    }
    windows.push({ phase, start, end: performance.now() });
  };
  for (let r = 0; r < rounds; r++) {
    await round('skein', skein, issue);
    await round('limit', limit, () => nativeLimitOnce(caKey, info, tbs));
    await round('converting', converting, () => nativeWithConversionsOnce(caKey, info, tbs));
  }
  await new Promise((r) => setTimeout(r, 10)); // the observer reports asynchronously
  gcObserver.disconnect();
  const gc: GcPauses = { skein: { count: 0, totalMs: 0, maxMs: 0 }, limit: { count: 0, totalMs: 0, maxMs: 0 }, converting: { count: 0, totalMs: 0, maxMs: 0 } };
  for (const p of pauses) {
    const w = windows.find((x) => p.start >= x.start && p.start < x.end);
    if (!w) continue;
    const g = gc[w.phase];
    g.count++;
    g.totalMs += p.duration;
    g.maxMs = Math.max(g.maxMs, p.duration);
  }
  return { skein, limit, converting, gc };
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

type AgentWorkload = { servedFromCache: number; servedAfterSigning: number; signCalls: number; x509FirstAnswerMs: number[] };

/**
 * New pods, each of a service account of its own (so every first call needs an SVID no other pod shares):
 * from creation to the SVID in hand, and the first Workload API call alone, from a process in the pod. The
 * agent signs each identity when the API binds its pod; how many first calls its cache answered is counted.
 */
async function firstSvids(pods: number): Promise<{ createToSvid: number[]; fetch: number[]; connect: number[]; agentSide: number[]; fromCache: number; signCalls: number }> {
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
    const connectMs: number[] = [];
    const agentMs: number[] = [];
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
      connectMs.push(r.connectMs!);
      agentMs.push((await agent()).x509FirstAnswerMs.at(-1)!);
      await rest.delete(`/api/v1/namespaces/default/pods/${name}`, { gracePeriodSeconds: 0 });
    }
    const after = await agent();
    return { createToSvid, fetch: fetchMs, connect: connectMs, agentSide: agentMs, fromCache: after.servedFromCache - before.servedFromCache, signCalls: after.signCalls - before.signCalls };
  } finally {
    await down(stateDir);
  }
}

const median = (times: number[]) => [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
const round2 = (x: number) => Math.round(x * 100) / 100;

export async function svidBench(opts: { issuances: number; forgeIssuances: number; pods: number }): Promise<Result[]> {
  const loadBefore = loadavg()[0]!;
  const { skein, limit, converting, gc } = await nativeIssuance(opts.issuances);
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
    {
      name: 'GC pauses in Skein rounds',
      unit: 'ms',
      value: round2(gc.skein.totalMs),
      note: `${gc.skein.count} pauses, longest ${round2(gc.skein.maxMs)} ms, over ${opts.issuances} SVIDs; limit rounds: ${gc.limit.count} pauses, ${round2(gc.limit.totalMs)} ms`,
    },
    { name: 'load average (1 min) over the issuance runs', unit: 'load', value: round2(loadAfter), note: `${round2(loadBefore)} before; ${cpus().length} CPUs, shared` },
    { name: 'X.509-SVIDs issued per second: node-forge (RSA-2048)', unit: 'SVIDs/s', value: rate(rsa), note: 'same steps; node-forge signs only RSA' },
    distribution('  per SVID: node-forge (RSA-2048)', 'ms', rsa),
  ];
  if (opts.pods > 0) {
    const { createToSvid, fetch, connect, agentSide, fromCache, signCalls } = await firstSvids(opts.pods);
    results.push(
      distribution('new pod: created -> first SVID in hand', 'ms', createToSvid, 'pod start on the test bed included'),
      distribution('new pod: first FetchX509SVID, in the agent', 'ms', agentSide, 'call in -> SVID written: attestation + cache (target p99 <= 10 ms)'),
      distribution('new pod: first FetchX509SVID call -> SVID', 'ms', fetch, "from a process in the running pod, connected: the agent's part plus the client's first-call set-up (a fresh Node process)"),
      distribution('  before it: loading the client and connecting', 'ms', connect, "the workload's own start-up (Node, proto loading) and the agent's accept (pidfd)"),
      { name: 'new pod: first calls answered from SVIDs signed at binding', unit: 'calls', value: fromCache, note: `of ${opts.pods} pods, each a service account of its own; ${signCalls} node CA calls in all` },
    );
  }
  return results;
}
