// Issue 5 (foundation): the BPF socket LB steers real TCP and UDP sockets from a process in an attached
// cgroup to the programmed backends; getpeername and received datagrams show the service address; a new
// backend set takes effect on the next connect. Everything lives in a netns and cgroup this test makes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SocketLb, type Frontend } from '../../datapath/socket-lb.js';
import { cgroup2Root, destroyCgroup, ensureCgroup } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { addNetns, deleteNetns, ip } from '../../testbed/netns.js';
import { distPath } from '../../testbed/repo.js';
import { nodeInSandbox } from './helpers.js';

const tag = randomBytes(3).toString('hex');
const ns = `sk-lbtest-${tag}`;
let cgroup = '';
let lb: SocketLb;
const servers: ChildProcess[] = [];
const VIP = '100.64.250.10';
const http: Frontend = { ip: VIP, port: 80, proto: 'TCP' };
const udp: Frontend = { ip: VIP, port: 80, proto: 'UDP' };
const backends = [
  { ip: '10.250.0.2', port: 8080, name: 'a' },
  { ip: '10.250.0.3', port: 8081, name: 'b' },
];

const runClient = (code: string) => nodeInSandbox(cgroup, ns, code);

const tcpOnce = `
import { connect } from 'node:net';
const s = connect({ host: '${VIP}', port: 80 }, () => s.write('GET / HTTP/1.0\\r\\n\\r\\n'));
let body = '';
s.on('data', (d) => (body += d));
s.on('end', () => console.log(JSON.stringify({ peer: s.remoteAddress + ':' + s.remotePort, pod: JSON.parse(body.split('\\r\\n\\r\\n')[1]).pod })));
`;
const udpOnce = `
import { createSocket } from 'node:dgram';
const s = createSocket('udp4');
s.on('message', (m, r) => { console.log(JSON.stringify({ from: r.address + ':' + r.port, pod: JSON.parse(m.toString()).pod })); s.close(); });
s.send('ping', 80, '${VIP}');
setTimeout(() => { console.log('{"timeout":true}'); process.exit(0); }, 2000).unref();
`;

beforeAll(async () => {
  await addNetns(ns);
  for (const b of backends) await ip(ns, 'addr', 'add', `${b.ip}/32`, 'dev', 'lo');
  // Each backend its own port (echo binds 0.0.0.0), so the answer names the backend that was chosen.
  for (const b of backends) {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, distPath('deploy', 'images', 'echo.js')], {
      stdio: 'ignore',
      env: { ...process.env, POD_NAME: b.name, HTTP_PORT: String(b.port), UDP_PORT: String(b.port), TCP_PORT: String(b.port + 1000) },
    });
    servers.push(child);
  }
  cgroup = ensureCgroup(join(await cgroup2Root(), 'skein', `lbtest-${tag}`));
  lb = new SocketLb();
  lb.attach(cgroup);
});

afterAll(async () => {
  lb?.detach();
  lb?.close();
  for (const s of servers) s.kill('SIGKILL');
  if (cgroup) await destroyCgroup(cgroup);
  await deleteNetns(ns);
});

describe('BPF socket load balancing', () => {
  it('loads all four programs and refuses bad addresses with the field named', () => {
    expect(() => lb.setService({ ip: '100.64.0.300', port: 80, proto: 'TCP' }, [])).toThrow(/"100.64.0.300" is not an IPv4 address/);
    expect(() => lb.setService(http, [{ ip: '10.0.0.1', port: 70000 }])).toThrow(/port 70000 is out of range/);
  });

  it('rewrites a TCP connect to the service address to a backend, and getpeername shows the service', async () => {
    for (const b of backends) {
      await waitFor(`echo ${b.name}`, async () => ((await runClient(`import { connect } from 'node:net'; const s = connect({ host: '${b.ip}', port: ${b.port} }, () => { console.log('up'); s.destroy(); }); s.on('error', () => process.exit(1));`)) === 'up' ? true : undefined), 10_000);
    }
    lb.setService(http, [backends[0]!]);
    expect(lb.activeCount(http)).toBe(1);
    const r = JSON.parse(await runClient(tcpOnce)) as { peer: string; pod: string };
    expect(r).toEqual({ peer: `${VIP}:80`, pod: 'a' });
  });

  it('rewrites UDP datagrams and shows replies as coming from the service', async () => {
    lb.setService(udp, [backends[1]!]);
    const r = JSON.parse(await runClient(udpOnce)) as { from: string; pod: string };
    expect(r).toEqual({ from: `${VIP}:80`, pod: 'b' });
  });

  it('switches the active backend set for the next connect, and passes through when it is empty', async () => {
    lb.setService(http, [backends[1]!]);
    expect(JSON.parse(await runClient(tcpOnce))).toEqual({ peer: `${VIP}:80`, pod: 'b' });
    // Both backends active: over a bounded number of connects, both answer.
    lb.setService(http, backends);
    const seen = new Set<string>();
    for (let i = 0; i < 20 && seen.size < 2; i++) seen.add((JSON.parse(await runClient(tcpOnce)) as { pod: string }).pod);
    expect([...seen].sort()).toEqual(['a', 'b']);
    lb.deleteService(http);
    expect(lb.activeCount(http)).toBe(0);
    await expect(runClient(`import { connect } from 'node:net'; const s = connect({ host: '${VIP}', port: 80 }); s.on('connect', () => { console.log('connected'); process.exit(0); }); s.on('error', (e) => { console.log(e.code); process.exit(0); });`)).resolves.not.toBe('connected');
  });
});
