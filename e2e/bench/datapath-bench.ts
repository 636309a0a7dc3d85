// Issue 5's datapath benchmark: connect() + one request round trip from a client netns to a server netns,
// (a) straight to the backend, (b) to a ClusterIP through the BPF socket LB, (c) to a ClusterIP through an
// iptables DNAT rule set as kube-proxy's iptables mode writes it; (b) and (c) with 1, 1,000 and 10,000
// services installed, the measured service in the middle of them (kube-proxy's KUBE-SERVICES chain is
// walked in order, so that is its average case). Timed by a small C client (native/rr.c).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SocketLb } from '../../datapath/socket-lb.js';
import { cgroup2Root, destroyCgroup, ensureCgroup } from '../../testbed/cgroup.js';
import { addNetns, addVethPair, deleteNetns, ip, sysctl } from '../../testbed/netns.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { run } from '../../testbed/run.js';
import { distribution, type Result } from './report.js';

const CLIENT_IP = '172.31.255.1';
const SERVER_IP = '172.31.255.2';
/** Each variant's server listens on a port of its own: no TIME_WAIT left by an earlier variant (the server
 * closes first) can meet a new connection's 4-tuple and cost it a SYN retransmit. */
const serverPort = (variant: number) => 9000 + variant;
const SERVICE_PORT = 80;
const CLUSTER_CIDR = '172.31.0.0/16';

/** The i-th service's ClusterIP: 100.127.0.0/16, outside the test bed's service range. */
const vip = (i: number) => `100.127.${Math.floor(i / 250)}.${(i % 250) + 1}`;
/** Backends of the services not measured: addresses nothing answers on, never connected to. */
const idleBackend = (i: number) => `172.31.${Math.floor(i / 250) % 200}.${(i % 250) + 1}`;

interface Bed {
  client: string;
  server: string;
  cgroup: string;
  rr: string;
  tmp: string;
}

async function setUp(): Promise<Bed> {
  const tag = randomBytes(3).toString('hex');
  const bed: Bed = { client: `sk-bench-${tag}-c`, server: `sk-bench-${tag}-s`, cgroup: join(await cgroup2Root(), `skein-bench-${tag}`), rr: '', tmp: mkdtempSync(join(tmpdir(), 'skein-rr-')) };
  bed.rr = join(bed.tmp, 'rr');
  await run('cc', ['-O2', '-Wall', '-o', bed.rr, join(REPO_ROOT, 'e2e', 'bench', 'native', 'rr.c')]);
  await addNetns(bed.client);
  await addNetns(bed.server);
  await addVethPair({ aNs: bed.client, aName: 'eth0', aAddr: `${CLIENT_IP}/30`, bNs: bed.server, bName: 'eth0', bAddr: `${SERVER_IP}/30`, tmpName: 'rrpeer' });
  // ClusterIPs route like any off-node address (kube-proxy's DNAT needs a route to exist).
  await ip(bed.client, 'route', 'add', 'default', 'via', SERVER_IP);
  // Tens of thousands of short connections: the whole ephemeral range (the server closes first, so the
  // client keeps no TIME_WAIT and never needs to reuse one).
  await sysctl(bed.client, 'net.ipv4.ip_local_port_range', '1024 65000');
  ensureCgroup(join(bed.cgroup, 'client'));
  return bed;
}

async function tearDown(bed: Bed): Promise<void> {
  await destroyCgroup(bed.cgroup);
  await deleteNetns(bed.client);
  await deleteNetns(bed.server);
  rmSync(bed.tmp, { recursive: true, force: true });
}

function inCgroup(cgroup: string, argv: string[]): ReturnType<typeof spawn> {
  ensureCgroup(cgroup);
  return spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(cgroup, 'cgroup.procs'), ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs the C client in the client cgroup and netns; the per-request times in µs. */
function roundTrips(bed: Bed, target: string, port: number, n: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const child = inCgroup(join(bed.cgroup, 'client'), ['ip', 'netns', 'exec', bed.client, bed.rr, 'client', target, String(port), String(n)]);
    let out = '';
    let err = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`rr client to ${target} exited ${code}: ${err.trim()}`));
      resolve(out.trim().split('\n').map((l) => Number(l) / 1000));
    });
  });
}

/** The nat table kube-proxy's iptables mode writes for `count` single-endpoint ClusterIP services. */
function kubeProxyRules(count: number, measured: number, measuredPort: number): string {
  const chains = [':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]', ':KUBE-POSTROUTING - [0:0]'];
  const rules = [
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  for (let i = 0; i < count; i++) {
    const svc = `KUBE-SVC-${i.toString(16).toUpperCase().padStart(16, '0')}`;
    const sep = `KUBE-SEP-${i.toString(16).toUpperCase().padStart(16, '0')}`;
    const backend = i === measured ? SERVER_IP : idleBackend(i);
    const port = i === measured ? measuredPort : 8080;
    chains.push(`:${svc} - [0:0]`, `:${sep} - [0:0]`);
    rules.push(
      `-A KUBE-SERVICES -d ${vip(i)}/32 -p tcp -m comment --comment "bench/svc-${i}:http cluster IP" -m tcp --dport ${SERVICE_PORT} -j ${svc}`,
      // The client is inside the cluster CIDR, like a pod: no SNAT, as for pod-to-ClusterIP traffic.
      `-A ${svc} ! -s ${CLUSTER_CIDR} -d ${vip(i)}/32 -p tcp -m comment --comment "bench/svc-${i}:http cluster IP" -m tcp --dport ${SERVICE_PORT} -j KUBE-MARK-MASQ`,
      `-A ${svc} -m comment --comment "bench/svc-${i}:http -> ${backend}:${port}" -j ${sep}`,
      `-A ${sep} -s ${backend}/32 -m comment --comment "bench/svc-${i}:http" -j KUBE-MARK-MASQ`,
      `-A ${sep} -p tcp -m comment --comment "bench/svc-${i}:http" -m tcp -j DNAT --to-destination ${backend}:${port}`,
    );
  }
  return ['*nat', ...chains, ...rules, 'COMMIT', ''].join('\n');
}

const EMPTY_NAT = '*nat\nCOMMIT\n';

export async function datapathBench(opts: { requests: number; serviceCounts: number[] }): Promise<Result[]> {
  const bed = await setUp();
  const results: Result[] = [];
  let variant = 0;
  const nextServer = () => {
    const port = serverPort(++variant);
    inCgroup(join(bed.cgroup, `server-${variant}`), ['ip', 'netns', 'exec', bed.server, bed.rr, 'server', String(port)]);
    return port;
  };
  const measure = async (name: string, target: string, port: number, note?: string) => {
    await roundTrips(bed, target, port, Math.min(200, opts.requests)); // warm caches, conntrack, neighbors
    results.push(distribution(name, 'µs', await roundTrips(bed, target, port, opts.requests), note));
  };
  try {
    const direct = nextServer();
    await measure('connect+RR direct to the backend', SERVER_IP, direct, 'no service translation at all');
    for (const count of opts.serviceCounts) {
      const measured = Math.floor(count / 2);
      const port = nextServer();
      const lb = new SocketLb();
      try {
        const t0 = performance.now();
        for (let i = 0; i < count; i++) {
          lb.setService({ ip: vip(i), port: SERVICE_PORT, proto: 'TCP' }, [{ ip: i === measured ? SERVER_IP : idleBackend(i), port: i === measured ? port : 8080 }]);
        }
        results.push({ name: `install ${count} services: socket LB`, unit: 'ms', value: Math.round(performance.now() - t0), note: 'map writes from the agent process' });
        lb.attach(join(bed.cgroup, 'client'));
        await measure(`connect+RR socket LB, ${count} services`, vip(measured), SERVICE_PORT);
      } finally {
        lb.detach();
        lb.close();
      }
    }
    for (const count of opts.serviceCounts) {
      const measured = Math.floor(count / 2);
      const port = nextServer();
      const t0 = performance.now();
      await run('ip', ['netns', 'exec', bed.client, 'iptables-restore'], { input: kubeProxyRules(count, measured, port), timeoutMs: 600_000 });
      results.push({ name: `install ${count} services: iptables`, unit: 'ms', value: Math.round(performance.now() - t0), note: 'one iptables-restore of the nat table' });
      try {
        await measure(`connect+RR iptables DNAT, ${count} services`, vip(measured), SERVICE_PORT, 'kube-proxy iptables mode rule shape');
      } finally {
        await run('ip', ['netns', 'exec', bed.client, 'iptables-restore'], { input: EMPTY_NAT });
      }
    }
  } finally {
    await tearDown(bed);
  }
  return results;
}
