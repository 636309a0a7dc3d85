// Issue 15: serving certificates rotate at half-life with no dropped connection. skein-apiserver runs with
// --serving-cert-ttl=12 (renewed every ~6 s) and keeps the mesh etcd's serving certificate in the directory
// etcd reads it from (--mesh-etcd-serving-dir). Across several renewals of both, connections opened before
// keep working without reconnecting (an etcd watch, a node-CA gRPC channel, and the node agents' own), and
// every new handshake gets the certificate current at that moment.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { keys } from '../../mesh/schema/keys.js';
import { loadNodeCaApi, NODE_CA_NAME } from '../../mesh/node-ca/proto.js';
import { ApiserverStatus } from '../../mesh/status.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import { meshEtcdServerName } from '../../mtls/mesh-identities.js';
import { meshPki } from '../../testbed/skein-apiserver.js';
import { waitFor } from '../../testbed/daemon.js';
import { readState, statePaths } from '../../testbed/state.js';
import { workloadSocket } from '../../testbed/agents.js';
import { down, up } from '../../testbed/testbed.js';
import { rollOutApiserverArgs, clusterRest, meshEtcd, readyPods, tempStateDir, workloadProbe } from './helpers.js';

const CLUSTER = 'rot';
const TTL_S = 12;
const stateDir = tempStateDir('serving-cert-rotation');
let rest: KubeRest;

const clusterDir = () => statePaths(stateDir).cluster(CLUSTER);
const status = async () => ApiserverStatus.parse(await rest.get(skeinProxyPath('/v1/status')));
const nodeTls = () => ({ ca: readFileSync(meshPki(clusterDir()).ca, 'utf8'), cert: readFileSync(join(clusterDir(), 'agent-1', 'node.crt'), 'utf8'), key: readFileSync(join(clusterDir(), 'agent-1', 'node.key'), 'utf8') });

/** The serial (hex, upper case) and lifetime of the certificate a fresh TLS handshake gets from host:port. */
function handshake(hostPort: string, servername: string): Promise<{ serial: string; lifetimeMs: number }> {
  const [host, port] = hostPort.split(':') as [string, string];
  const t = nodeTls();
  return new Promise((resolve, reject) => {
    const s = connect({ host, port: Number(port), servername, ca: t.ca, cert: t.cert, key: t.key, ALPNProtocols: ['h2'] }, () => {
      const c = s.getPeerCertificate();
      resolve({ serial: c.serialNumber.toUpperCase(), lifetimeMs: Date.parse(c.valid_to) - Date.parse(c.valid_from) });
      s.destroy();
    });
    s.on('error', reject);
  });
}

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: 86 }], nodes: 1, echo: true });
  rest = clusterRest(stateDir, CLUSTER);
  // On the test bed the mesh etcd is a process of this machine reading mesh-pki/: that directory plays the
  // volume a sidecar etcd would share with skein-apiserver.
  await rollOutApiserverArgs(rest, [`--serving-cert-ttl=${TTL_S}`, `--mesh-etcd-serving-dir=${meshPki(clusterDir()).dir}`]);
  await waitFor('both serving certificates kept by skein-apiserver', async () => {
    const s = (await status()).servingCertificates;
    return s?.nodeCa && s.meshEtcd ? true : undefined;
  }, 30_000);
});

afterAll(async () => {
  await down(stateDir);
});

describe('serving certificates rotate under live connections', () => {
  it('an etcd watch and a node-CA channel opened before keep working across renewals, and new handshakes see each new certificate', async () => {
    const etcdUrl = new URL(readState(stateDir)!.clusters[0]!.meshEtcdUrl).host;
    const root = meshEtcd(stateDir, CLUSTER);
    const echo = (await readyPods(rest, 'app=echo', 2))[0]!;
    const nodeCaEndpoint = (JSON.parse((await root.get(keys.nodeCa(CLUSTER)).string())!) as { endpoint: string }).endpoint;
    const t = nodeTls();
    const nodeCa = new (loadNodeCaApi().NodeCA)(nodeCaEndpoint, grpc.credentials.createSsl(Buffer.from(t.ca), Buffer.from(t.key), Buffer.from(t.cert)), { 'grpc.ssl_target_name_override': NODE_CA_NAME, 'grpc.default_authority': NODE_CA_NAME });
    const signJwt = () =>
      new Promise<string>((resolve, reject) =>
        nodeCa.SignJWTSVID({ pod: { namespace: 'default', name: echo.metadata!.name!, uid: echo.metadata!.uid! }, audience: ['rotation'] }, { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res!.spiffe_id))),
      );
    const watch = await root.watch().prefix('/rotation-test/').create();
    const seen: string[] = [];
    let disconnects = 0;
    watch.on('put', (kv) => seen.push(kv.key.toString()));
    watch.on('disconnected', () => disconnects++);
    try {
      expect(await signJwt()).toBe(`spiffe://${CLUSTER}.skein/ns/default/sa/default`);
      const channel = nodeCa.getChannel();
      const states: grpc.connectivityState[] = [];
      const follow = (s: grpc.connectivityState) =>
        channel.watchConnectivityState(s, Infinity, () => {
          const now = channel.getConnectivityState(false);
          states.push(now);
          if (now !== grpc.connectivityState.SHUTDOWN) follow(now);
        });
      follow(channel.getConnectivityState(false));

      const before = (await status()).servingCertificates!;
      const servedBefore = { nodeCa: await handshake(nodeCaEndpoint, NODE_CA_NAME), etcd: await handshake(etcdUrl, meshEtcdServerName(CLUSTER)) };
      expect(servedBefore.nodeCa.serial).toBe(before.nodeCa!.serial.toUpperCase());
      // Through two renewals of each (every ~6 s): one etcd write and one node-CA call every 250 ms, on the open connections.
      const served = new Set([servedBefore.etcd.serial]);
      const deadline = Date.now() + 2.2 * TTL_S * 1000;
      let i = 0;
      while (Date.now() < deadline) {
        await root.put(`/rotation-test/${i++}`).value('x');
        expect(await signJwt()).toMatch(/^spiffe:/);
        if (i % 8 === 0) served.add((await handshake(etcdUrl, meshEtcdServerName(CLUSTER))).serial);
        await new Promise((r) => setTimeout(r, 250));
      }
      const after = (await status()).servingCertificates!;
      expect(after.nodeCa!.renewals).toBeGreaterThanOrEqual(before.nodeCa!.renewals + 2);
      expect(after.meshEtcd!.renewals).toBeGreaterThanOrEqual(before.meshEtcd!.renewals + 2);
      // New handshakes get the certificate current now, with the configured lifetime (1 min backdating included).
      const nodeCaNow = await handshake(nodeCaEndpoint, NODE_CA_NAME);
      expect(nodeCaNow.serial).toBe(after.nodeCa!.serial.toUpperCase());
      expect(nodeCaNow.serial).not.toBe(servedBefore.nodeCa.serial);
      expect(nodeCaNow.lifetimeMs).toBeLessThanOrEqual((TTL_S + 60) * 1000);
      const etcdNow = await handshake(etcdUrl, meshEtcdServerName(CLUSTER));
      expect(etcdNow.serial).toBe(after.meshEtcd!.serial.toUpperCase());
      served.add(etcdNow.serial);
      expect(served.size).toBeGreaterThanOrEqual(3); // etcd served each renewal to new handshakes, without a restart
      // Nothing dropped: every write reached the watch opened before, which never reconnected, and the
      // node-CA channel never left READY.
      await waitFor('the watch to see every write', async () => (seen.length === i ? true : undefined), 5_000);
      expect(disconnects).toBe(0);
      expect(states).toEqual([]);
      // The agent's own connections (its etcd watches, its node-CA channel) carried on: a pod still gets its SVID.
      const socket = `unix://${workloadSocket(clusterDir(), 1)}`;
      expect(await workloadProbe(stateDir, CLUSTER, echo, socket)).toMatchObject({ ok: `spiffe://${CLUSTER}.skein/ns/default/sa/default` });
    } finally {
      await watch.cancel().catch(() => {});
      nodeCa.close();
      root.close();
    }
  });
});
