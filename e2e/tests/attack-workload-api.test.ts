// Issue #10, hole 6: "Workload attestation can be fooled" — written as the attacker, on the real test bed
// (one cluster, one node; the attacker is the `client` pod, service account default; the victim is a pod
// of its own service account). Pods on the test bed share the host's pid namespace, as a node's do.
//  (a) A process on the node in no pod sits in a cgroup whose path names the victim's pod UID
//      (…/pod-<uid>, …/pod<uid>) but is not the node's pod cgroup: it must get PermissionDenied, and the
//      agent must issue nothing.
//  (b) Pid reuse: a process of the attacker pod opens the Workload API socket, hands the connection to a
//      child and exits; a process of the victim pod is made to get the connector's pid (ns_last_pid), and
//      the agent attests that process as the victim; then the child calls on the inherited connection. It
//      must be refused, never given the victim's SPIFFE ID.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Pod } from '../../mesh/kube/objects.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { cgroupOfPid, destroyCgroup, ensureCgroup } from '../../testbed/cgroup.js';
import { waitFor } from '../../testbed/daemon.js';
import { REPO_ROOT } from '../../testbed/repo.js';
import { readState } from '../../testbed/state.js';
import { down, locatePod, up } from '../../testbed/testbed.js';
import { clusterRest, idlePodAs, readyPods, tempStateDir, workloadProbe } from './helpers.js';

const CLUSTER = 'atk';
const VICTIM_ID = `spiffe://${CLUSTER}.skein/ns/default/sa/victim`;
const ATTACKER_ID = `spiffe://${CLUSTER}.skein/ns/default/sa/default`;
const stateDir = tempStateDir('attack-workload-api');
let rest: KubeRest;
let attacker: Pod;
let victim: Pod;
let socket = '';
let nodeCgroup = '';
let agentUrl = '';

// The victim's SVID is signed when its pod is bound (before anyone asks): what an attacker must not get is
// it served, nor anything signed for it.
type WorkloadStatus = { pods: number; svids: number; issued: number; renewed: number; signCalls: number; servedFromCache: number; servedAfterSigning: number };
const nothingMoreThan = (s: WorkloadStatus) => ({ svids: s.svids, issued: s.issued, renewed: s.renewed, signCalls: s.signCalls, servedFromCache: s.servedFromCache, servedAfterSigning: s.servedAfterSigning });
const agentStatus = async () => (await (await fetch(`${agentUrl}/v1/workload`)).json()) as WorkloadStatus;
const podRef = (p: Pod) => `default/${p.metadata!.name}`;

beforeAll(async () => {
  await up({ stateDir, clusters: [{ name: CLUSTER, id: 83 }], nodes: 1, echo: true });
  rest = clusterRest(stateDir, CLUSTER);
  victim = await idlePodAs(rest, 'victim');
  attacker = (await readyPods(rest, 'app=client', 1))[0]!;
  const where = await locatePod(stateDir, CLUSTER, podRef(victim));
  socket = where.workloadSocket;
  nodeCgroup = dirname(dirname(where.cgroup)); // <node>/pod-<uid>/exec
  agentUrl = readState(stateDir)!.clusters[0]!.agents[0]!;
});

afterAll(async () => {
  await down(stateDir);
});

// --- processes the attacker starts ----------------------------------------------------------------------

/** Starts argv as a process in `cgroup` from its first instruction (and, given one, in a pod's netns). */
function spawnInCgroup(cgroup: string, argv: string[], netns?: string): ChildProcess {
  ensureCgroup(cgroup);
  const inNetns = netns ? ['ip', 'netns', 'exec', netns] : [];
  return spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(cgroup, 'cgroup.procs'), ...inNetns, ...argv], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
}

type Line = Record<string, unknown>;

/** The JSON lines a process prints (its children too, sharing its stdout), to wait on. */
function jsonLines(child: ChildProcess): { seen: Line[]; next: (what: string, pred: (l: Line) => boolean) => Promise<Line> } {
  const seen: Line[] = [];
  let buf = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    buf += c;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line.startsWith('{')) seen.push(JSON.parse(line) as Line);
    }
  });
  const next = (what: string, pred: (l: Line) => boolean) => waitFor(what, async () => seen.find(pred), 30_000);
  return { seen, next };
}

/**
 * One FetchX509SVID with Skein's client on a connection of its own: at once (then exits), or when sent SIGUSR2
 * (`wait`; it lives on, holding its pid).
 */
const probeScript = (wait: boolean) => `
import { readFileSync } from 'node:fs';
import { workloadApiClient, securityHeader } from '${REPO_ROOT}/dist/mtls/workload-api/client.js';
const probe = () => {
  const cgroup = readFileSync('/proc/self/cgroup', 'utf8').split('\\n').find((l) => l.startsWith('0::')).slice(3);
  const say = (r) => { console.log(JSON.stringify({ probe: process.pid, cgroup, ...r })); ${wait ? '' : 'process.exit(0);'} };
  const call = workloadApiClient('${socket}').FetchX509SVID({}, securityHeader());
  call.on('data', (d) => say({ ok: d.svids[0].spiffe_id }));
  call.on('error', (e) => say({ code: e.code, details: e.details }));
};
${wait ? `process.on('SIGUSR2', probe); console.log(JSON.stringify({ ready: process.pid })); setInterval(() => {}, 1000);` : 'probe();'}`;

/**
 * The child that inherits the connection (fd 3) and, on each SIGUSR2, sends FetchX509SVID over it: gRPC
 * spoken by hand over HTTP/2, since no client library takes a connection it did not open. It prints the
 * SPIFFE ID it was given, or the status it got.
 */
const inheritorScript = `
const net = require('net'), http2 = require('http2');
// X509SVIDResponse: svids = 1 (X509SVID: spiffe_id = 1, ...); every field is length-delimited.
const varint = (b, i) => { let v = 0, s = 0, x; do { x = b[i++]; v += (x & 0x7f) * 2 ** s; s += 7; } while (x & 0x80); return [v, i]; };
const fields = (b) => { const out = []; for (let i = 0; i < b.length; ) { const [tag, j] = varint(b, i); const [len, k] = varint(b, j); out.push([tag >> 3, b.subarray(k, k + len)]); i = k + len; } return out; };
const svidIds = (msg) => fields(msg).filter(([f]) => f === 1).map(([, svid]) => fields(svid).find(([f]) => f === 1)[1].toString());
const session = http2.connect('http://workload-api', { createConnection: () => new net.Socket({ fd: 3, readable: true, writable: true }) });
session.on('error', (e) => console.log(JSON.stringify({ sessionError: e.message })));
let n = 0;
process.on('SIGUSR2', () => {
  const call = ++n;
  const req = session.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID', 'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
  let data = Buffer.alloc(0), done = false;
  const report = (r) => { if (done) return; done = true; console.log(JSON.stringify({ call, inheritor: process.pid, ...r })); req.close(); };
  const status = (h) => report({ code: Number(h['grpc-status']), details: decodeURIComponent(String(h['grpc-message'] || '')) });
  req.on('response', (h) => h['grpc-status'] !== undefined && status(h));
  req.on('trailers', status);
  req.on('data', (d) => {
    data = Buffer.concat([data, d]);
    if (data.length < 5 || data.length < 5 + data.readUInt32BE(1)) return;
    // The SVIDs' IDs, and every SPIFFE ID anywhere in the answer (certificates included).
    const mentions = data.toString('latin1').match(/spiffe:\\/\\/[a-z0-9.-]+\\/ns\\/[a-z0-9-]+\\/sa\\/[a-z0-9-]+/g) || [];
    report({ ok: svidIds(data.subarray(5, 5 + data.readUInt32BE(1))), mentions: [...new Set(mentions)] });
  });
  req.on('error', (e) => report({ error: e.message }));
  req.end(Buffer.alloc(5));
});
console.log(JSON.stringify({ inheritorReady: process.pid }));
setInterval(() => {}, 1000);`;

/** Opens the Workload API socket and hands the open connection to a child (its fd 3), then idles. */
const connectorScript = `
const net = require('net'), { spawn } = require('child_process');
const conn = net.createConnection(process.argv[1], () => {
  const child = spawn(process.execPath, ['-e', process.argv[2]], { stdio: ['ignore', 'inherit', 'inherit', conn] });
  console.log(JSON.stringify({ connector: process.pid, inheritor: child.pid }));
  setInterval(() => {}, 1000);
});`;

/**
 * Starts argv in `cgroup` as pid `pid`: as root in this pid namespace, ns_last_pid = pid - 1 makes the next
 * fork get `pid` if it is free. Another process forking in between takes it: kill ours and try again.
 */
async function spawnWithPid(pid: number, cgroup: string, argv: string[], netns: string): Promise<ChildProcess> {
  for (let attempt = 1; attempt <= 50; attempt++) {
    if (existsSync(`/proc/${pid}`)) throw new Error(`pid ${pid} was taken by another process (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}) before the victim could get it`);
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const child = spawnInCgroup(cgroup, argv, netns);
    if (child.pid === pid) return child;
    await new Promise((r) => child.once('exit', r).kill('SIGKILL'));
  }
  throw new Error(`could not start a process as pid ${pid} in 50 attempts (the machine forks too much)`);
}

const kill = (p: ChildProcess | number | undefined) => {
  try {
    if (typeof p === 'number') process.kill(p, 'SIGKILL');
    else p?.kill('SIGKILL');
  } catch {
    /* already gone */
  }
};

describe('attacking the Workload API’s attestation', () => {
  it('a process in a cgroup whose path names the victim’s pod UID, outside the node’s pod cgroups, gets PermissionDenied and nothing is issued', async () => {
    const uid = victim.metadata!.uid!;
    const testbedRoot = readState(stateDir)!.cgroupRoot;
    const lookAlikes = [
      join(testbedRoot, 'attack', `pod-${uid}`), // the test bed's pod-<uid> form, beside the nodes
      join(testbedRoot, 'attack', 'kubepods', 'besteffort', `pod${uid}`), // the kubelet's form, in the wrong place
      join(nodeCgroup, 'attack', `pod-${uid}`), // under the node, one level too deep
      join(nodeCgroup, 'attack', `pod${uid}`, 'exec'),
    ];
    const before = await agentStatus();
    try {
      for (const cgroup of lookAlikes) {
        const p = spawnInCgroup(cgroup, [process.execPath, '--input-type=module', '-e', probeScript(false)]);
        const out = await jsonLines(p).next(`the probe in ${cgroup}`, (l) => 'probe' in l);
        expect(cgroup.endsWith(out.cgroup as string), `${cgroup} ⊇ ${String(out.cgroup)}`).toBe(true); // it ran there
        expect(out.cgroup).toContain(uid);
        expect(out, cgroup).toMatchObject({ code: 7, details: expect.stringContaining('not a pod this node serves') });
        expect(out.ok).toBeUndefined();
      }
      expect(await agentStatus()).toMatchObject(nothingMoreThan(before));
    } finally {
      await destroyCgroup(join(testbedRoot, 'attack'));
      await destroyCgroup(join(nodeCgroup, 'attack'));
    }
    // The control: the same UID from the victim's real pod cgroup is the victim (and gets the SVID the agent holds).
    expect(await workloadProbe(stateDir, CLUSTER, victim, `unix://${socket}`)).toMatchObject({ ok: VICTIM_ID });
    expect(await agentStatus()).toMatchObject({ ...nothingMoreThan(before), servedFromCache: before.servedFromCache + 1 });
  });

  it('pid reuse: a connection whose connector exited is refused, though the connector’s pid is now the victim’s', async () => {
    const atk = await locatePod(stateDir, CLUSTER, podRef(attacker));
    const vic = await locatePod(stateDir, CLUSTER, podRef(victim));
    const connector = spawnInCgroup(atk.cgroup, [process.execPath, '-e', connectorScript, socket, inheritorScript], atk.netns);
    const out = jsonLines(connector);
    let inheritor: number | undefined;
    let victimProcess: ChildProcess | undefined;
    try {
      const started = await out.next('the connector to hand its connection over', (l) => 'connector' in l);
      const pid = started.connector as number;
      inheritor = started.inheritor as number;
      expect(pid).toBe(connector.pid);
      await out.next('the inheritor to start', (l) => l.inheritorReady === inheritor);
      // The inherited connection serves the attacker pod while its connector lives.
      process.kill(inheritor, 'SIGUSR2');
      expect(await out.next('call 1', (l) => l.call === 1)).toMatchObject({ ok: [ATTACKER_ID] });

      // The connector exits (and is reaped: its pid is free); a process of the victim pod gets that pid.
      await new Promise((r) => connector.once('exit', r).kill('SIGKILL'));
      victimProcess = await spawnWithPid(pid, vic.cgroup, [process.execPath, '--input-type=module', '-e', probeScript(true)], vic.netns);
      const victimOut = jsonLines(victimProcess);
      await victimOut.next('the victim process to start', (l) => l.ready === pid);
      expect(vic.cgroup.endsWith(cgroupOfPid(pid)!)).toBe(true); // the victim pod's cgroup
      expect(readlinkSync(`/proc/${pid}/ns/pid`)).toBe(readlinkSync(`/proc/${inheritor}/ns/pid`)); // one pid namespace
      // The agent does attest pid `pid` as the victim now (on a connection of its own)...
      process.kill(pid, 'SIGUSR2');
      expect(await victimOut.next('the victim probe', (l) => l.probe === pid)).toMatchObject({ ok: VICTIM_ID });

      // ...but the connection the old pid `pid` opened is refused: it belongs to a process that exited.
      expect(vic.cgroup.endsWith(cgroupOfPid(pid)!)).toBe(true); // the victim's process still holds the pid
      const before = await agentStatus();
      process.kill(inheritor, 'SIGUSR2');
      const refused = await out.next('call 2', (l) => l.call === 2);
      expect(refused).toMatchObject({ code: 7, details: expect.stringContaining(`the process that opened this connection (pid ${pid}) has exited`) });
      expect(refused.ok).toBeUndefined();
      expect(JSON.stringify(out.seen)).not.toContain(VICTIM_ID);
      expect(await agentStatus()).toMatchObject(nothingMoreThan(before));
    } finally {
      kill(connector);
      kill(inheritor);
      kill(victimProcess);
    }
  });
});
