// Issue 15: `skein ca rotate` across two connected clusters. A go-spiffe client in west calls a go-spiffe
// server in east over mTLS, a new TLS handshake per call, while east's workload CA rotates through all its
// phases (prepare, activate, retire): no call fails, the server's SVID moves from the old CA to the new one,
// and west follows through the bundle east exports (never through the link Secret `skein connect` wrote).
// After retirement an SVID of the old CA is refused. As the attacker holding east's mesh etcd: a bundle for
// another trust domain, an empty one and a garbage one are refused by west and change nothing. A drill in
// west (its echo failing over to east's) across another rotation of east loses no request.
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod } from '../../mesh/kube/objects.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rotateWorkloadCa } from '../../deploy/cli/ca.js';
import { connect } from '../../deploy/cli/connect.js';
import { DrillReport } from '../../deploy/drill/report.js';
import { DEFAULT_CLIENT_IMAGE, runDrill } from '../../deploy/drill/run.js';
import { fetchStatus } from '../../deploy/cli/status.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { KubeSecrets } from '../../mesh/kube/secrets.js';
import { remoteSecretName } from '../../mesh/link-secrets.js';
import { keys } from '../../mesh/schema/keys.js';
import { WORKLOAD_CA_SECRET } from '../../mtls/cluster-ca.js';
import { signX509Svid } from '../../mtls/svid.js';
import { splitPemCertificates } from '../../mtls/trust-bundle.js';
import { createCA, newKeyAndCsr, type PemPair } from '../../mtls/x509.js';
import { waitFor } from '../../testbed/daemon.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { down, exec, up } from '../../testbed/testbed.js';
import { clusterKubeconfig, clusterRest, meshEtcd, podIp, readyPods, rollOutApiserverArgs, tempStateDir } from './helpers.js';

const EAST = 'cr-east';
const WEST = 'cr-west';
const ID = (cluster: string) => `spiffe://${cluster}.skein/ns/default/sa/default`;
const stateDir = tempStateDir('ca-rotation');
const peer = execFileSync('bash', [join(REPO_ROOT, 'e2e', 'spiffe-peer', 'build.sh')], { encoding: 'utf8' }).trim();
let east: KubeRest;
let eastServer: Pod;
let westClient: Pod;
/** East's workload CA before the rotation (with its key: the test plays a holder of an old SVID). */
let oldCa: PemPair;
/** An SVID of east's default identity signed by that CA, served by a plain Node TLS server in east. */
let oldSvidUrl = '';

type Call = { seq: number; answer?: { server: string; client: string }; serverCaKeyId?: string; error?: string };
const inPod = (cluster: string, pod: Pod, argv: string[]) => exec({ stateDir, context: `skein-${cluster}`, pod: `default/${pod.metadata!.name}`, argv, stdio: 'pipe' });
const lines = (out: string) => out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call);
const callEast = (url: string, extra: string[] = []) => inPod(WEST, westClient, [peer, 'get', '-url', url, '-server', ID(EAST), ...extra]);
const serverUrl = () => `https://${podIp(eastServer)}:8443/`;

/** What west's Workload API serves for east's trust domain: CAs in its X.509 bundle, keys in its JWT bundle. */
const bundleProbe = `
import { workloadApiClient, securityHeader } from '${REPO_ROOT}/dist/mtls/workload-api/client.js';
const c = workloadApiClient(process.env.SPIFFE_ENDPOINT_SOCKET);
const first = (m) => new Promise((resolve, reject) => { const call = c[m]({}, securityHeader()); call.on('data', (d) => { call.cancel(); resolve(d); }); call.on('error', (e) => { if (e.code !== 1) reject(e); }); });
const td = process.argv[1];
const der = (await first('FetchX509Bundles')).bundles[td];
let cas = 0;
for (let at = 0; at < der.length; cas++) { const b = der[at + 1]; const n = b & 0x7f; let len = b < 0x80 ? b : 0; for (let i = 0; b >= 0x80 && i < n; i++) len = len * 256 + der[at + 2 + i]; at += 2 + (b < 0x80 ? 0 : n) + len; }
const jwks = JSON.parse(Buffer.from((await first('FetchJWTBundles')).bundles[td]).toString());
console.log(JSON.stringify({ x509: cas, jwt: jwks.keys.length }));
process.exit(0);`;
const westServes = async () => JSON.parse((await inPod(WEST, westClient, ['node', '--input-type=module', '-e', bundleProbe, '--', `spiffe://${EAST}.skein`])).stdout.trim().split('\n').at(-1)!) as { x509: number; jwt: number };

/** A leaf SVID of east's default service account signed by `ca`, as PEM cert + key. */
async function svidOf(ca: PemPair): Promise<{ cert: string; key: string }> {
  const { keyPkcs8Der, csrDer } = await newKeyAndCsr();
  const { certDer } = await signX509Svid(ca, { spiffeId: ID(EAST), csrDer, ttlMs: 3600_000 });
  return { cert: new X509Certificate(certDer).toString(), key: createPrivateKey({ key: keyPkcs8Der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** The subject key identifier of a CA certificate (what a leaf names as its authority key ID), hex. */
const keyIdOf = (pem: string) => {
  const der = new X509Certificate(pem).raw;
  // 2.5.29.14 subjectKeyIdentifier: OID, then an OCTET STRING wrapping an OCTET STRING of the key ID.
  const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x0e]));
  const len = der[at + 8]!;
  return der.subarray(at + 9, at + 9 + len).toString('hex');
};

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 91 }, { name: WEST, id: 92 }], nodes: 1, echo: true });
  east = clusterRest(stateDir, EAST);
  // Short-lived JWT-SVIDs in east: the old key is retired no sooner than the last token it signed expires.
  await rollOutApiserverArgs(east, ['--jwt-svid-ttl=10']);
  await connect(clusterKubeconfig(stateDir, EAST), clusterKubeconfig(stateDir, WEST), () => {});
  eastServer = (await readyPods(east, 'app=client', 1))[0]!;
  westClient = (await readyPods(clusterRest(stateDir, WEST), 'app=client', 1))[0]!;
  // East's go-spiffe server, for the rest of the file (down() ends it), and a server holding an SVID of
  // east's CA as it is now, signed here (as anyone holding an SVID of the old CA would hold one).
  void inPod(EAST, eastServer, [peer, 'serve', '-addr', ':8443', '-allow', ID(WEST)]);
  const data = (await new KubeSecrets(east).get(WORKLOAD_CA_SECRET))!;
  oldCa = { certPem: data['ca.crt']!, keyPem: data['ca.key']! };
  const old = await svidOf(oldCa);
  const serve = `import { createServer } from 'node:https'; createServer({ cert: process.argv[1], key: process.argv[2] }, (q, s) => s.end('{"server":"old"}')).listen(8444);`;
  void inPod(EAST, eastServer, ['node', '--input-type=module', '-e', serve, '--', old.cert, old.key]);
  oldSvidUrl = `https://${podIp(eastServer)}:8444/`;
});

afterAll(async () => {
  await down(stateDir);
});

describe('skein ca rotate across two connected clusters', () => {
  it('before the rotation west trusts east’s CA: east’s server and an SVID of that CA are both accepted', async () => {
    const r = await waitFor('an mTLS answer from east', async () => {
      const out = await callEast(serverUrl());
      return out.code === 0 ? lines(out.stdout) : undefined;
    }, 60_000);
    expect(r[0]!.answer).toMatchObject({ client: ID(WEST), server: ID(EAST) });
    const old = await waitFor('the old-CA server', async () => {
      const out = await callEast(oldSvidUrl);
      return out.code === 0 ? lines(out.stdout) : undefined;
    }, 30_000);
    expect(old[0]!.error).toBeUndefined();
  });

  it('rotates east’s workload CA while a go-spiffe client in west calls east over mTLS, a new handshake per call, with no failed call', async () => {
    const stop = join(stateDir, 'stop-calls');
    rmSync(stop, { force: true });
    // Bounded: at most 3 minutes or 2,000 calls, and it stops once the rotation is over.
    const calls = callEast(serverUrl(), ['-count', '2000', '-interval', '100ms', '-for', '180s', '-fresh', '-stop-file', stop]);
    const said: string[] = [];
    const saidAt: number[] = [];
    const t0 = Date.now();
    let rotated;
    try {
      await new Promise((r) => setTimeout(r, 2000));
      rotated = await rotateWorkloadCa({
        kc: clusterKubeconfig(stateDir, EAST),
        context: `skein-${EAST}`,
        peers: [{ name: `skein-${WEST}`, kc: clusterKubeconfig(stateDir, WEST) }],
        graceMs: 5000,
        timeoutMs: 120_000,
        progress: (m) => {
          said.push(m);
          saidAt.push(Date.now());
        },
      });
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      writeFileSync(stop, '');
    }
    const out = await calls;
    const r = lines(out.stdout);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`rotation ${rotated.from} -> ${rotated.to}: ${r.length} calls in ${seconds.toFixed(1)} s, steps: ${said.join(' | ')}`);
    expect(rotated.steps).toEqual(['prepare', 'activate', 'retire']);
    expect(rotated.to).not.toBe(rotated.from);
    // Retired no sooner than the JWT-SVID lifetime (10 s, longer than --grace) after the new CA began to sign.
    const at = (step: string) => saidAt[said.findIndex((m) => m.startsWith(`${step}:`))]!;
    expect(at('retire') - at('activate')).toBeGreaterThanOrEqual(10_000 - 1000);
    expect(r.filter((c) => c.error)).toEqual([]);
    expect(out.code).toBe(0);
    expect(r.length).toBeGreaterThan(50);
    // East's server was answered with an SVID of the old CA first and of the new CA at the end.
    const data = (await new KubeSecrets(east).get(WORKLOAD_CA_SECRET))!;
    const [oldId, newId] = [keyIdOf(oldCa.certPem), keyIdOf(data['ca.crt']!)];
    expect(r[0]!.serverCaKeyId).toBe(oldId);
    expect(r.at(-1)!.serverCaKeyId).toBe(newId);
    expect(new Set(r.map((c) => c.serverCaKeyId))).toEqual(new Set([oldId, newId]));
    // The Secret is back to one CA, and west's link keeps the bundle east exports (a restart starts from it).
    expect(data['next.crt'] ?? data['retiring.crt']).toBeUndefined();
    const link = (await new KubeSecrets(clusterRest(stateDir, WEST)).get(remoteSecretName(EAST)))!;
    expect(splitPemCertificates(link['bundle.crt']!)).toEqual(splitPemCertificates(data['ca.crt']!));
  });

  it('after retirement an SVID of the old CA is refused by west', async () => {
    const out = await callEast(oldSvidUrl);
    expect(out.code).not.toBe(0);
    expect(lines(out.stdout)[0]!.error).toMatch(/certificate signed by unknown authority|x509/);
    // East's own server, on the new CA, still answers.
    const ok = await callEast(serverUrl());
    expect(lines(ok.stdout)[0]!.answer).toMatchObject({ server: ID(EAST) });
  });

  it('a rotation already under way, a step out of order and an unknown peer context are refused, naming the fix', async () => {
    const kc = clusterKubeconfig(stateDir, EAST);
    const base = { kc, context: `skein-${EAST}`, peers: [], graceMs: 0, timeoutMs: 60_000, progress: () => {} };
    await expect(rotateWorkloadCa({ ...base, step: 'activate' })).rejects.toThrow(/--step activate: .*phase idle.*run `skein ca rotate --context skein-cr-east --step prepare` next/);
    await expect(rotateWorkloadCa({ ...base, resume: true })).rejects.toThrow(/--resume: no rotation .* in progress/);
    expect(await westServes()).toEqual({ x509: 1, jwt: 1 });
    await rotateWorkloadCa({ ...base, step: 'prepare' });
    // West's Workload API serves both of east's CAs, in the X.509 and the JWT bundle, while the rotation is under way.
    await waitFor('west to serve both of east’s CAs', async () => ((await westServes()).x509 === 2 ? true : undefined), 30_000);
    expect(await westServes()).toEqual({ x509: 2, jwt: 2 });
    await expect(rotateWorkloadCa(base)).rejects.toThrow(/already in progress \(phase prepared since .*\): run `skein ca rotate --context skein-cr-east --resume`/);
    await expect(rotateWorkloadCa({ ...base, peers: [{ name: 'skein-cr-east', kc }], resume: true })).rejects.toThrow(/--peer-context skein-cr-east: cluster cr-east is not connected to cr-east/);
    // Finish it, so the attacker cases below start from one CA.
    const r = await rotateWorkloadCa({ ...base, resume: true, peers: [{ name: `skein-${WEST}`, kc: clusterKubeconfig(stateDir, WEST) }] });
    expect(r.steps).toEqual(['activate', 'retire']);
    expect(await westServes()).toEqual({ x509: 1, jwt: 1 });
  });

  it('as the attacker holding east’s mesh etcd: a bundle for west’s trust domain, an empty one and a garbage one are refused and change nothing', async () => {
    const root = meshEtcd(stateDir, EAST);
    const westEtcd = meshEtcd(stateDir, WEST);
    const westKc = clusterKubeconfig(stateDir, WEST);
    const key = keys.exportedBundle(EAST);
    const good = (await root.get(key).string())!;
    const trusted = async () => Object.fromEntries(Object.entries(await westEtcd.getAll().prefix(keys.bundlesPrefix(WEST)).strings()));
    const before = await trusted();
    const rejected = async (reason: string) => (await fetchStatus(westKc)).remotes.find((r) => r.cluster === EAST)!.rejectedByReason[reason as 'bad-bundle'] ?? 0;
    const evilWest = await createCA({ commonName: 'evil', ttlMs: 3600_000, uri: `spiffe://${WEST}.skein` });
    const garbage = '-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n';
    const attempts: [string, unknown][] = [
      ['bad-bundle', { cluster: EAST, trustDomain: `${WEST}.skein`, caPem: evilWest.certPem }],
      ['bad-bundle', { cluster: EAST, trustDomain: `${EAST}.skein`, caPem: evilWest.certPem }],
      ['schema', { cluster: EAST, trustDomain: `${EAST}.skein`, caPem: '' }],
      ['bad-bundle', { cluster: EAST, trustDomain: `${EAST}.skein`, caPem: garbage }],
    ];
    try {
      for (const [reason, value] of attempts) {
        const n = await rejected(reason);
        await root.put(key).value(JSON.stringify(value));
        await waitFor(`west to refuse ${JSON.stringify(value).slice(0, 80)}`, async () => ((await rejected(reason)) > n ? true : undefined), 15_000);
        expect(await trusted()).toEqual(before);
      }
      const out = await callEast(serverUrl(), ['-fresh']);
      expect(lines(out.stdout)[0]!.answer).toMatchObject({ server: ID(EAST) });
    } finally {
      await root.put(key).value(good);
      root.close();
      westEtcd.close();
    }
  });

  it('a skein drill in west across a rotation of east loses no request', async () => {
    const [report, rotated] = await Promise.all([
      runDrill({ kc: clusterKubeconfig(stateDir, WEST), service: 'default/echo', protocol: 'http', intervalMs: 20, requestTimeoutMs: 500, phaseMs: 6000, stepTimeoutMs: 60_000, image: DEFAULT_CLIENT_IMAGE, progress: () => {} }),
      rotateWorkloadCa({ kc: clusterKubeconfig(stateDir, EAST), context: `skein-${EAST}`, peers: [{ name: `skein-${WEST}`, kc: clusterKubeconfig(stateDir, WEST) }], graceMs: 3000, timeoutMs: 120_000, progress: () => {} }),
    ]);
    const r = DrillReport.parse(report);
    expect(rotated.steps).toEqual(['prepare', 'activate', 'retire']);
    expect(r.failoverMs).not.toBeNull();
    expect(r.phases[1]!.answeredBy[EAST]).toBeGreaterThan(0);
    expect(r.requestsLost).toBe(0);
    console.log(`drill across a rotation: ${r.requests} requests, ${r.requestsLost} lost, failover ${r.failoverMs} ms, failback ${r.failbackMs} ms`);
  });
});
