// A hostile peer, tried on the test bed (issue #10, holes 2 and 4). West is the attacker: it writes into its
// own export with its own mesh etcd root credentials (what a compromised peer, or whoever holds its etcd
// write credentials, has). East is the victim: whatever west claims outside the pod CIDRs and cluster ID
// `skein connect` pinned — loopback, east's node, link-local/metadata, east's own pods and Services — is
// refused, counted by reason, never in east's cache and never in what east's agent programs; a backend
// inside the pin still carries traffic. And connect itself refuses a rebuilt peer (same name, new CA) and a
// cluster whose ID is already linked, before writing anything.
import { execFileSync } from 'node:child_process';
import type { V1Node, V1Service } from '@kubernetes/client-node';
import type { Etcd3, Watcher } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { KubeSecrets } from '../../mesh/kube/secrets.js';
import { cachePrefix, exportPrefix, keys, parseExportKey } from '../../mesh/schema/keys.js';
import { AgentView } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { connect } from '../../deploy/cli/connect.js';
import { CA_SECRET } from '../../mtls/cluster-ca.js';
import { createCA, issueCertificate } from '../../mtls/x509.js';
import type { RejectReason } from '../../mesh/address-policy.js';
import type { RemoteStatus } from '../../mesh/status.js';
import { REMOTE_LABEL, remoteSecretName } from '../../mesh/link-secrets.js';
import { waitFor } from '../../testbed/daemon.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState, statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { clientRequests, clusterKubeconfig, clusterRest, meshEtcd, podIp, readyPods, tempStateDir } from './helpers.js';

const EAST = 'ap-east';
const WEST = 'ap-west';
const NORTH = 'ap-north';
const WEST_ID = 72;
const stateDir = tempStateDir('attack-peer');
let east: KubeRest;
let eastEtcd: Etcd3;
/** The attacker's handle: west's own mesh etcd, as its root. */
let westEtcd: Etcd3;
let vip = '';
let eastClient = '';
let legit = ''; // a west echo pod: inside west's pinned pod CIDR
let eastPod = '';
let eastNodeIp = '';
let eastEchoClusterIp = '';

const kubeconfig = (c: string) => clusterKubeconfig(stateDir, c);
const status = () => east.get<ApiserverStatus>(skeinProxyPath('/v1/status'));
const westSeenByEast = async (): Promise<RemoteStatus | undefined> => (await status()).remotes.find((r) => r.cluster === WEST);
const rejectedFor = async (reason: RejectReason) => (await westSeenByEast())?.rejectedByReason[reason] ?? 0;
const skein = (...args: string[]) => execFileSync('node', ['dist/deploy/cli/skein.js', ...args, '--kubeconfig', statePaths(stateDir).kubeconfig], { cwd: REPO_ROOT, encoding: 'utf8' });

// ---- what the victim ever held: every value east's cache of west took, every backend east's agent programmed ----

/** Every address, CIDR and identity east's cache of west ever held (a watch from before the attacks). */
const everCached = new Set<string>();
/**
 * Every backend address east's node agent ever had in its datapath for the attacked service (its
 * /v1/programmed, sampled; other services rightly have east's own pods).
 */
const everProgrammed = new Set<string>();
let cacheWatch: Watcher | undefined;
let sampler: NodeJS.Timeout | undefined;

function recordCached(key: string, raw: string): void {
  const parsed = parseExportKey(key, 'cache');
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    everCached.add(`unparsable:${key}`);
    return;
  }
  if (parsed?.kind === 'services') for (const b of v.backends as { ip: string }[]) everCached.add(b.ip);
  if (parsed?.kind === 'ips') everCached.add(v.ip as string).add(`identity:${v.identity as number}`);
  if (parsed?.kind === 'identities') everCached.add(`identity:${v.id as number}`);
  if (parsed?.kind === 'nodes') for (const c of v.podCidrs as string[]) everCached.add(c);
  if (parsed?.kind === 'config') everCached.add(`config-id:${v.id as number}`);
}

async function sampleProgrammed(agentUrl: string): Promise<void> {
  const res = await fetch(`${agentUrl}/v1/programmed`).catch(() => undefined);
  if (!res?.ok) return;
  const body = (await res.json()) as { frontends: { frontend: { ip: string }; backends: { ip: string }[] }[] };
  for (const f of body.frontends) if (f.frontend.ip === vip) for (const b of f.backends) everProgrammed.add(b.ip);
}

/** The backends east's agent programs for the attack service's frontend right now. */
async function programmedForVip(): Promise<string[]> {
  const agentUrl = readState(stateDir)!.clusters.find((c) => c.name === EAST)!.agents[0]!;
  const body = (await (await fetch(`${agentUrl}/v1/programmed`)).json()) as { frontends: { frontend: { ip: string; port: number; proto: string }; backends: { ip: string; port: number }[] }[] };
  const f = body.frontends.find((x) => x.frontend.ip === vip && x.frontend.port === 80 && x.frontend.proto === 'TCP');
  return f ? f.backends.map((b) => `${b.ip}:${b.port}`) : ['(frontend not programmed)'];
}

// ---- the attacker's writes ----

const backend = (ip: string) => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' } }, ready: true, serving: true, terminating: false });
const attackService = (...ips: string[]) => ({ cluster: WEST, namespace: 'default', name: 'attack', shared: true, affinity: 'local', clusterIps: [], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], backends: ips.map(backend) });
const put = (key: string, value: object | string) => westEtcd.put(key).value(typeof value === 'string' ? value : JSON.stringify(value));
const cached = (key: string) => eastEtcd.get(cachePrefix(WEST) + key.slice(exportPrefix(WEST).length)).string();

/** West claims `value` at `key`; east must count one more rejection for `reason` and hold no copy of it. */
async function refused(key: string, value: object | string, reason: RejectReason): Promise<void> {
  const before = await rejectedFor(reason);
  await put(key, value);
  await waitFor(`east to reject ${key} for ${reason}`, async () => ((await rejectedFor(reason)) > before ? true : undefined), 30_000);
  // A key east had cached (a good value it replaced) is deleted from the cache, not kept.
  await waitFor(`east's cache to hold no copy of ${key}`, async () => ((await cached(key)) === null ? true : undefined), 10_000);
}

/** West's legitimate value for the attack service: one of its own echo pods. */
async function serveLegit(): Promise<void> {
  await put(keys.service(WEST, 'default', 'attack'), attackService(legit));
  await waitFor('east to program the legitimate west backend', async () => ((await programmedForVip()).join() === `${legit}:8080` ? true : undefined), 30_000);
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: EAST, id: 71 }, { name: WEST, id: WEST_ID }], nodes: 1, echo: true });
  east = clusterRest(stateDir, EAST);
  const west = clusterRest(stateDir, WEST);
  eastEtcd = meshEtcd(stateDir, EAST);
  westEtcd = meshEtcd(stateDir, WEST);
  eastClient = (await readyPods(east, 'app=client', 1))[0]!.metadata!.name!;
  eastPod = podIp((await readyPods(east, 'app=echo', 2))[0]!);
  legit = podIp((await readyPods(west, 'app=echo', 2))[0]!);
  const node = await east.get<V1Node>(`/api/v1/nodes/${EAST}-node-1`);
  eastNodeIp = node.status!.addresses!.find((a) => a.type === 'InternalIP')!.address;
  eastEchoClusterIp = (await east.get<V1Service>('/api/v1/namespaces/default/services/echo')).spec!.clusterIP!;
  // The victim's service the attack aims at: global, no local endpoints, so east's clients go to west.
  await east.post('/api/v1/namespaces/default/services', {
    metadata: { name: 'attack', annotations: { 'skein.io/global': 'true' } },
    spec: { selector: { app: 'nothing-here' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  });
  vip = (await east.get<V1Service>('/api/v1/namespaces/default/services/attack')).spec!.clusterIP!;
});

afterAll(async () => {
  if (sampler) clearInterval(sampler);
  await cacheWatch?.cancel().catch(() => {});
  eastEtcd?.close();
  westEtcd?.close();
  await down(stateDir);
});

/** Every Secret of skein-system in both clusters, by name: resource version and data. */
async function allSecrets(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const c of [EAST, WEST]) {
    const list = await clusterRest(stateDir, c).get<{ items: { metadata: { name: string; resourceVersion: string }; data?: Record<string, string> }[] }>('/api/v1/namespaces/skein-system/secrets');
    for (const s of list.items) out[`${c}/${s.metadata.name}`] = `${s.metadata.resourceVersion} ${JSON.stringify(s.data ?? {})}`;
  }
  return out;
}

describe('skein connect refuses a colliding peer before writing anything (hole 4)', () => {
  it('refuses a cluster whose ID is already linked from the other side, naming both', async () => {
    // East is already linked to north, which has west's ID (north's link as a real connect writes it).
    const northCa = await createCA({ commonName: 'skein ap-north mesh CA', ttlMs: 3600_000 });
    const northBundle = await createCA({ commonName: 'skein ap-north workload CA', ttlMs: 3600_000, uri: `spiffe://${NORTH}.skein` });
    const cert = await issueCertificate(northCa, { commonName: `remote-${EAST}`, usage: 'client', ttlMs: 3600_000 });
    const northLink = { cluster: NORTH, id: String(WEST_ID), endpoint: 'https://127.0.0.1:9', 'ca.crt': northCa.certPem, 'bundle.crt': northBundle.certPem, 'tls.crt': cert.certPem, 'tls.key': cert.keyPem, 'trust-domain': `${NORTH}.skein`, 'pod-cidrs': '10.73.1.0/24' };
    const eastSecrets = new KubeSecrets(east);
    await eastSecrets.put(remoteSecretName(NORTH), northLink, { [REMOTE_LABEL]: NORTH });
    try {
      const before = await allSecrets();
      await expect(connect(kubeconfig(WEST), kubeconfig(EAST), () => {})).rejects.toThrow(
        `clusters ${WEST} and ${NORTH} both have cluster ID ${WEST_ID}, and ${NORTH} is already linked from ${EAST}: give ${WEST} another ID`,
      );
      expect(await allSecrets()).toEqual(before);
      expect(Object.keys(before).filter((k) => /skein-(remote|peer)-ap-(east|west)$/.test(k))).toEqual([]);
    } finally {
      await eastSecrets.delete(remoteSecretName(NORTH));
    }
    await waitFor(`east to drop ${NORTH}`, async () => ((await status()).remotes.length === 0 ? true : undefined), 30_000);
  });

  it('connects east and west, pinning each side', async () => {
    const said: string[] = [];
    await connect(kubeconfig(EAST), kubeconfig(WEST), (m) => said.push(m));
    expect(said).toContain(`${EAST}: pinning ${WEST} to cluster ID ${WEST_ID} and pod CIDRs 10.72.1.0/24`);
    const r = await westSeenByEast();
    expect(r).toMatchObject({ synced: true, pinnedPodCidrs: ['10.72.1.0/24'], rejected: 0, rejectedByReason: {} });
    // From here on, record everything east's cache takes and east's agent programs.
    for (const [k, v] of Object.entries(await eastEtcd.getAll().prefix(cachePrefix(WEST)).strings())) recordCached(k, v);
    cacheWatch = await eastEtcd.watch().prefix(cachePrefix(WEST)).create();
    cacheWatch.on('put', (kv) => recordCached(kv.key.toString(), kv.value.toString()));
    const agentUrl = readState(stateDir)!.clusters.find((c) => c.name === EAST)!.agents[0]!;
    sampler = setInterval(() => void sampleProgrammed(agentUrl), 50);
  });
});

describe('a peer pointing local traffic anywhere (hole 2)', () => {
  it('a legitimate backend inside the pin carries east traffic', async () => {
    await serveLegit();
    const r = await clientRequests(stateDir, EAST, eastClient, ['http', `${vip}:80`, '--count', '3', '--timeout-ms', '2000']);
    expect(r.map((x) => [x.ok, x.cluster])).toEqual([[true, WEST], [true, WEST], [true, WEST]]);
  });

  it.each([
    ['loopback', (): string => '127.0.0.1', 'forbidden-address'],
    ["east's node", (): string => eastNodeIp, 'outside-pinned-cidrs'],
    ['cloud metadata', (): string => '169.254.169.254', 'forbidden-address'],
    ["one of east's own pods", (): string => eastPod, 'local-cidr'],
    ["one of east's own Services", (): string => eastEchoClusterIp, 'local-cidr'],
    ["west's /16 outside its pinned /24", (): string => '10.72.200.9', 'outside-pinned-cidrs'],
    ['no address at all (1.2.3.256)', (): string => '1.2.3.256', 'schema'],
  ] as const)('a backend at %s, next to a good one, is refused and the good value it replaced is dropped', async (_what, ip, reason) => {
    await serveLegit();
    await refused(keys.service(WEST, 'default', 'attack'), attackService(legit, ip()), reason);
    // Fail closed: east no longer sends anything to west for this service (no local backends: none at all).
    await waitFor("east's agent to drop the service's west backends", async () => ((await programmedForVip()).length === 0 ? true : undefined), 30_000);
  });

  it('an identity of another cluster, an ips entry outside the pin and a node with pod CIDRs outside it are refused', async () => {
    const eastIdentity = (71 << 16) | 300;
    const claims: [string, object | string, RejectReason][] = [
      [keys.identity(WEST, eastIdentity), { id: eastIdentity, labels: { 'k8s:app': 'echo' } }, 'wrong-cluster-id'],
      [keys.ip(WEST, '10.72.201.1'), { ip: '10.72.201.1', identity: (WEST_ID << 16) | 300, namespace: 'default', pod: 'evil' }, 'outside-pinned-cidrs'],
      [keys.ip(WEST, '10.72.1.250'), { ip: '10.72.1.250', identity: eastIdentity, namespace: 'default', pod: 'evil' }, 'wrong-cluster-id'],
      [keys.node(WEST, `${WEST}-node-9`), { name: `${WEST}-node-9`, cluster: WEST, addresses: [{ type: 'InternalIP', ip: '10.72.0.19' }], podCidrs: ['10.72.9.0/24'] }, 'outside-pinned-cidrs'],
      [keys.node(WEST, `${WEST}-node-8`), { name: `${WEST}-node-8`, cluster: WEST, addresses: [{ type: 'InternalIP', ip: '127.0.0.1' }], podCidrs: ['10.72.1.0/24'] }, 'forbidden-address'],
      [`${exportPrefix(WEST)}evil/thing`, '{}', 'foreign-key'],
    ];
    try {
      for (const [key, value, reason] of claims) await refused(key, value, reason);
    } finally {
      // Gone again, so a later relist has nothing to count twice.
      for (const [key] of claims) await westEtcd.delete().key(key);
    }
  });

  it('a config claiming wider pod CIDRs widens nothing; one naming another cluster ID is refused', async () => {
    const configKey = keys.config(WEST);
    const original = (await westEtcd.get(configKey).string())!;
    try {
      // Informational only: the config itself is cached, and east's status says what west advertises beyond its pin.
      await put(configKey, { ...(JSON.parse(original) as object), podCidrs: ['10.0.0.0/8'] });
      await waitFor('east to see west advertise beyond its pin', async () => ((await westSeenByEast())?.advertisedBeyondPin?.join() === '10.0.0.0/8' ? true : undefined), 30_000);
      await serveLegit();
      await refused(keys.service(WEST, 'default', 'attack'), attackService('10.72.50.5'), 'outside-pinned-cidrs');
      await refused(configKey, { ...(JSON.parse(original) as object), id: 71 }, 'wrong-cluster-id');
    } finally {
      await put(configKey, original);
    }
    await waitFor("east to cache west's real config again", async () => ((await cached(configKey)) === original ? true : undefined), 30_000);
  });

  it('nothing refused ever reached east: not its cache, not its agent, not its node view; the rejections are counted by reason', async () => {
    await serveLegit();
    const refusedClaims = ['127.0.0.1', eastNodeIp, '169.254.169.254', eastPod, eastEchoClusterIp, '10.72.200.9', '1.2.3.256', '10.72.50.5', '10.72.201.1', '10.72.1.250', `identity:${(71 << 16) | 300}`, '10.72.9.0/24', 'config-id:71'];
    expect(refusedClaims.filter((c) => everCached.has(c))).toEqual([]);
    expect([...everCached].filter((c) => c.startsWith('unparsable:'))).toEqual([]);
    expect(everCached.has(legit)).toBe(true); // the recorder saw the legitimate values
    expect(refusedClaims.filter((c) => everProgrammed.has(c))).toEqual([]);
    expect(everProgrammed.has(legit)).toBe(true);

    // What an operator sees: `skein status --node` (the agent's published view) ...
    const view = await waitFor('the node view to show the legitimate backend', async () => {
      const v = AgentView.parse(JSON.parse(skein('status', '--context', `skein-${EAST}`, '--node', `${EAST}-node-1`, '--json')));
      return v.programmed[`TCP/${vip}:80`]?.join() === `${legit}:8080` ? v : undefined;
    }, 30_000);
    expect(Object.entries(view.programmed).filter(([f]) => f.includes(vip))).toEqual([[`TCP/${vip}:80`, [`${legit}:8080`]]]);
    // ... `skein status --json` and its text form ...
    const s = JSON.parse(skein('status', '--context', `skein-${EAST}`, '--json')) as ApiserverStatus;
    const w = s.remotes.find((r) => r.cluster === WEST)!;
    // At least one per refused write above (a relist would check those keys again, so not exactly).
    const atLeast = { 'forbidden-address': 3, 'outside-pinned-cidrs': 5, 'local-cidr': 2, 'wrong-cluster-id': 3, schema: 1, 'foreign-key': 1 };
    for (const [reason, n] of Object.entries(atLeast)) expect(w.rejectedByReason[reason as RejectReason], reason).toBeGreaterThanOrEqual(n);
    expect(w.rejected).toBe(Object.values(w.rejectedByReason).reduce((a, b) => a + b, 0));
    expect(skein('status', '--context', `skein-${EAST}`)).toMatch(/pinned pod CIDRs 10\.72\.1\.0\/24\n\s+rejected by reason: .*forbidden-address \d+/);
    // ... and the metrics.
    const metrics = await east.get<string>(skeinProxyPath('/metrics'));
    for (const [reason, n] of Object.entries(w.rejectedByReason)) {
      expect(metrics).toContain(`skein_remote_rejected_keys_total{remote="${WEST}",reason="${reason}"} ${n}`);
    }
  });
});

describe('a rebuilt peer (hole 4)', () => {
  it('same name, new CA: connect refuses, naming both, and writes nothing on either side', async () => {
    const westSecrets = new KubeSecrets(clusterRest(stateDir, WEST));
    const realCa = (await westSecrets.get(CA_SECRET))!;
    const rebuiltCa = await createCA({ commonName: `skein ${WEST} mesh CA (rebuilt)`, ttlMs: 3600_000 });
    await westSecrets.put(CA_SECRET, { 'ca.crt': rebuiltCa.certPem, 'ca.key': rebuiltCa.keyPem });
    try {
      const links = async () => Object.fromEntries(Object.entries(await allSecrets()).filter(([k]) => !k.endsWith(`/${CA_SECRET}`)));
      const before = await links();
      expect(Object.keys(before)).toEqual(expect.arrayContaining([`${EAST}/${remoteSecretName(WEST)}`, `${WEST}/${remoteSecretName(EAST)}`]));
      await expect(connect(kubeconfig(EAST), kubeconfig(WEST), () => {})).rejects.toThrow(
        new RegExp(`^cluster ${WEST} is already linked from ${EAST} with another CA \\(fingerprint sha256 [0-9A-F:]{23}…; ${WEST}'s CA now is sha256 [0-9A-F:]{23}…\\); run skein disconnect first if ${WEST} was rebuilt$`),
      );
      expect(await links()).toEqual(before);
    } finally {
      await westSecrets.put(CA_SECRET, realCa);
    }
    // The real CA back: connect is a no-op again and the link still carries traffic.
    expect((await connect(kubeconfig(EAST), kubeconfig(WEST), () => {})).changed).toBe(false);
    const r = await clientRequests(stateDir, EAST, eastClient, ['http', `${vip}:80`, '--count', '2', '--timeout-ms', '2000']);
    expect(r.map((x) => x.cluster)).toEqual([WEST, WEST]);
  });
});
