// Issue 13 (clusters on one L2 network, as kind's): the agent routes each connected cluster's node pod CIDRs
// via those nodes' addresses (`--peer-routes`), in the real kernel over rtnetlink (datapath/native/routes.cc).
// A small L2 network of namespaces: node A and node B of another cluster on one bridge, a pod behind B.
// From A the pod is unreachable until the routes are synced from B's node as the mesh carries it, reachable
// after, unreachable again once B's node is gone; a gateway off the shared network is refused by the kernel
// and reported; an operator's route is never touched; a second run adopts what the first installed.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MeshNode } from '../../mesh/schema/values.js';
import { waitFor } from '../../testbed/daemon.js';
import { addNetns, addVethPair, deleteNetns, inNetns, ip, sysctl } from '../../testbed/netns.js';
import { distPath } from '../../testbed/repo.js';

const tag = randomBytes(3).toString('hex');
const ns = { lan: `sk-rt-${tag}-lan`, a: `sk-rt-${tag}-a`, b: `sk-rt-${tag}-b`, pod: `sk-rt-${tag}-pod` };
const A_IP = '192.168.250.1';
const B_IP = '192.168.250.2';
const POD = { ip: '10.250.2.2', cidr: '10.250.2.0/24', port: 8080 };
const bNode: MeshNode = { name: 'west-b', cluster: 'west', addresses: [{ type: 'InternalIP', ip: B_IP }], podCidrs: [POD.cidr] };
// A node whose address is not on any network A shares: the kernel refuses the gateway.
const farNode: MeshNode = { name: 'west-far', cluster: 'west', addresses: [{ type: 'InternalIP', ip: '10.99.0.5' }], podCidrs: ['10.250.3.0/24'] };
let server: ChildProcess | undefined;

/** PeerRoutes.sync in node A's namespace, as the agent there runs it; returns the CIDRs that failed. */
async function syncInA(nodes: MeshNode[]): Promise<string[]> {
  const code = `
    const { PeerRoutes } = await import(${JSON.stringify(distPath('datapath', 'agent', 'peer-routes.js'))});
    const { kernelRoutes } = await import(${JSON.stringify(distPath('datapath', 'kernel-routes.js'))});
    const log = { info: () => {}, warn: () => {} };
    process.stdout.write(JSON.stringify(new PeerRoutes({ table: kernelRoutes, log }).sync(${JSON.stringify(nodes)})));`;
  return JSON.parse(await inNetns(ns.a, process.execPath, ['--input-type=module', '-e', code])) as string[];
}

/** One TCP connect from node A to the pod: 'ok' or the error code. */
function connectFromA(): Promise<string> {
  const code = `
    const s = require('node:net').connect({ host: '${POD.ip}', port: ${POD.port}, timeout: 1000 });
    s.on('connect', () => { process.stdout.write('ok'); s.destroy(); });
    s.on('timeout', () => { process.stdout.write('ETIMEDOUT'); s.destroy(); });
    s.on('error', (e) => process.stdout.write(e.code));`;
  return inNetns(ns.a, process.execPath, ['-e', code]);
}

const skeinRoutes = async (n: string) => (await ip(n, '-4', 'route', 'show', 'proto', '193')).trim();

describe('routes to connected clusters\' pods (--peer-routes)', () => {
  beforeAll(async () => {
    for (const n of Object.values(ns)) await addNetns(n);
    await ip(ns.lan, 'link', 'add', 'br0', 'type', 'bridge');
    await ip(ns.lan, 'link', 'set', 'br0', 'up');
    for (const [node, addr, port] of [[ns.a, A_IP, 'pa'], [ns.b, B_IP, 'pb']] as const) {
      await addVethPair({ aNs: ns.lan, aName: port, bNs: node, bName: 'eth0', bAddr: `${addr}/24`, tmpName: `t${port}` });
      await ip(ns.lan, 'link', 'set', port, 'master', 'br0');
    }
    await sysctl(ns.b, 'net.ipv4.ip_forward', '1');
    await addVethPair({ aNs: ns.b, aName: 'p0', aAddr: '10.250.2.1/24', bNs: ns.pod, bName: 'eth0', bAddr: `${POD.ip}/24`, tmpName: 'tp0' });
    await ip(ns.pod, 'route', 'add', 'default', 'via', '10.250.2.1');
    // An operator's own route on A, to a prefix Skein never claims here: it must outlive every sync.
    await ip(ns.a, 'route', 'add', '10.250.9.0/24', 'via', B_IP, 'proto', 'static');
    server = spawn('ip', ['netns', 'exec', ns.pod, process.execPath, '-e', `require('node:net').createServer((s) => s.end()).listen(${POD.port}, '${POD.ip}')`], { stdio: 'ignore' });
    await waitFor('the pod\'s server', async () => ((await inNetns(ns.pod, 'ss', ['-Htln', `sport = :${POD.port}`])).trim() ? true : undefined), 10_000);
  });

  afterAll(async () => {
    server?.kill('SIGKILL');
    for (const n of Object.values(ns)) await deleteNetns(n);
  });

  it('reaches the pod only while the remote node is routed, and reports a gateway off the shared network', async () => {
    expect(await connectFromA()).toBe('ENETUNREACH');
    expect(await syncInA([bNode, farNode])).toEqual(['10.250.3.0/24']);
    expect(await skeinRoutes(ns.a)).toBe(`${POD.cidr} via ${B_IP} dev eth0 metric 193`);
    expect(await connectFromA()).toBe('ok');
    // A second agent (a restart) finds the route it wants already there.
    expect(await syncInA([bNode])).toEqual([]);
    expect(await skeinRoutes(ns.a)).toBe(`${POD.cidr} via ${B_IP} dev eth0 metric 193`);
    // B's node leaves the mesh (its cluster disconnected, or the node deleted).
    expect(await syncInA([])).toEqual([]);
    expect(await skeinRoutes(ns.a)).toBe('');
    expect(await connectFromA()).toBe('ENETUNREACH');
    expect((await ip(ns.a, '-4', 'route', 'show', '10.250.9.0/24')).trim()).toBe(`10.250.9.0/24 via ${B_IP} dev eth0 proto static`);
  });
});
