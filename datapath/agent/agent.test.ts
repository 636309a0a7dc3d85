import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Etcd3 } from 'etcd3';
import { cachePrefix, keys } from '../../mesh/schema/keys.js';
import type { AgentView, GlobalService } from '../../mesh/schema/values.js';
import { AGENT_VIEW_SHARDS, agentShardOf, AgentViews } from '../../mesh/agent-view.js';
import { ProgramError, SocketLb, type BackendAddr, type Frontend, type Programmed, type ServiceProgrammer } from '../socket-lb.js';
import { FakeBpfMaps, FakeRouteTable } from '../test-fakes.js';
import { NodeAgent } from './agent.js';
import { MergedView } from './merged-view.js';
import { PeerRoutes } from './peer-routes.js';

const CLUSTER = 'east';
const vip = (n: number) => `100.64.0.${n}`;
const name = (f: Frontend) => `${f.proto}/${f.ip}:${f.port}`;

/** A local global service `default/<svc>` on vip(n):80 with `count` ready backends. */
function service(svc: string, n: number, count: number): GlobalService {
  return {
    cluster: CLUSTER,
    namespace: 'default',
    name: svc,
    shared: true,
    affinity: 'local',
    clusterIps: [vip(n)],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    backends: Array.from({ length: count }, (_, i) => ({ ip: `10.${n}.${(i >> 8) & 255}.${i & 255}`, ports: { http: { port: 8080, protocol: 'TCP' as const } }, ready: true, serving: true, terminating: false })),
  };
}

/** An in-memory SocketLb: holds at most `room` backend slots in all, refusing more as a full map would. */
class FakeLb implements ServiceProgrammer {
  readonly programmed = new Map<string, string[]>();
  readonly calls: string[] = [];
  /** Frontend → what its next setService throws (until removed). */
  readonly refuse = new Map<string, () => Error>();
  constructor(public room = Infinity) {}
  adopt(): Programmed[] {
    return [];
  }
  setService(f: Frontend, backends: BackendAddr[]): void {
    const k = name(f);
    this.calls.push(k);
    const refusal = this.refuse.get(k);
    if (refusal) throw refusal();
    const used = [...this.programmed].reduce((n, [other, b]) => n + (other === k ? 0 : b.length), 0);
    if (used + backends.length > this.room) throw new ProgramError('map-full', `${k} needs ${backends.length} slots, ${this.room - used} left`);
    if (backends.length) this.programmed.set(k, backends.map((b) => `${b.ip}:${b.port}`));
    else this.programmed.delete(k);
  }
  deleteService(f: Frontend): void {
    this.setService(f, []);
  }
  attempts(k: string): number {
    return this.calls.filter((c) => c === k).length;
  }
}

/** The etcd3 the agent uses once it has its view: watches (to feed changes) and a lease for its view. */
class FakeEtcd {
  readonly watchers: (EventEmitter & { cancel: () => Promise<void> })[] = [];
  /** What the agent published, key by key, and each view as a reader assembled it when its header was put. */
  readonly kv = new Map<string, string>();
  readonly views: AgentView[] = [];
  readonly writes: string[] = [];
  private readonly reader = new AgentViews(CLUSTER);
  watch() {
    const b = {
      prefix: () => b,
      startRevision: () => b,
      create: async () => {
        const w = Object.assign(new EventEmitter(), { cancel: async () => undefined });
        this.watchers.push(w);
        return w;
      },
    };
    return b;
  }
  private write(key: string, value: string | undefined): void {
    expect(key === keys.agent(CLUSTER, 'node-1') || key.startsWith(keys.agentFrontendsPrefix(CLUSTER, 'node-1'))).toBe(true);
    this.writes.push(key);
    if (value === undefined) this.kv.delete(key);
    else this.kv.set(key, value);
    this.reader.apply(key, value);
    if (key === keys.agent(CLUSTER, 'node-1')) this.views.push(this.reader.view('node-1')!);
  }
  /** A builder as etcd3's: exec() runs it, and so does awaiting it. */
  private op(run: () => void) {
    const exec = async () => run();
    return { exec, then: (ok: (v: void) => unknown, fail?: (e: unknown) => unknown) => exec().then(ok, fail) };
  }
  lease() {
    const lease = Object.assign(new EventEmitter(), {
      put: (key: string) => ({ value: (v: string) => this.op(() => this.write(key, v)) }),
      revoked: () => false,
      revoke: async () => undefined,
    });
    return lease;
  }
  delete() {
    return { key: (key: string) => this.op(() => this.write(key, undefined)) };
  }
  /** A change in the mesh etcd, as the agent's watch delivers it. */
  emit(key: string, value?: unknown): void {
    const kv = { key: Buffer.from(key), value: Buffer.from(value === undefined ? '' : JSON.stringify(value)) };
    this.watchers[0]!.emit(value === undefined ? 'delete' : 'put', kv);
  }
  get lastView(): AgentView | undefined {
    return this.views.at(-1);
  }
}

const agents: NodeAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
});

async function startAgent(lb: ServiceProgrammer, services: GlobalService[], more: Partial<ConstructorParameters<typeof NodeAgent>[0]> = {}) {
  const etcd = new FakeEtcd();
  const view = new MergedView(CLUSTER);
  for (const s of services) view.apply(keys.service(CLUSTER, s.namespace, s.name), JSON.stringify(s));
  const log = { warn: vi.fn(), info: vi.fn() };
  const agent = new NodeAgent({
    etcd: etcd as unknown as Etcd3,
    cluster: CLUSTER,
    node: 'node-1',
    lb,
    log,
    loadView: async () => ({ view, revision: 1 }),
    retry: { minMs: 20, maxMs: 100 },
    ...more,
  });
  agents.push(agent);
  await agent.start();
  const warnings = (frontend: string) => log.warn.mock.calls.filter(([o]) => (o as { frontend?: string }).frontend === frontend);
  return { agent, etcd, log, warnings };
}

describe('NodeAgent isolation: one service the datapath refuses', () => {
  it('does not stop the others; is reported, logged once, retried alone, and programmed once there is room', async () => {
    const lb = new FakeLb(3);
    // The big service comes first: the pass must go on past it.
    const { agent, etcd, log, warnings } = await startAgent(lb, [service('big', 1, 5), service('b', 2, 1), service('c', 3, 1)]);
    const big = `TCP/${vip(1)}:80`;
    expect([...lb.programmed.keys()].sort()).toEqual([`TCP/${vip(2)}:80`, `TCP/${vip(3)}:80`]);
    expect(agent.failures().get(big)).toMatchObject({ service: 'default/big', reason: 'map-full', attempts: 1, error: expect.stringContaining('needs 5 slots') });

    // Retried on its own backoff, logged only once for the same error.
    await vi.waitFor(() => expect(agent.failures().get(big)?.attempts).toBeGreaterThanOrEqual(3), { timeout: 5_000 });
    expect(warnings(big)).toHaveLength(1);
    expect(warnings(big)[0]![0]).toMatchObject({ service: 'default/big', reason: 'map-full' });

    // Meanwhile another service's change is programmed at once, not after the failing one's backoff.
    etcd.emit(keys.service(CLUSTER, 'default', 'c'), service('c', 3, 2));
    await agent.idle();
    expect(lb.programmed.get(`TCP/${vip(3)}:80`)).toHaveLength(2);

    // Published in the node's view (what skein status --node shows).
    await vi.waitFor(() => expect(etcd.lastView?.failing?.[big]).toMatchObject({ service: 'default/big', reason: 'map-full' }), { timeout: 5_000 });
    expect(etcd.lastView).toMatchObject({ failures: 1, frontends: 2 });
    expect(Object.keys(etcd.lastView!.programmed).sort()).toEqual([`TCP/${vip(2)}:80`, `TCP/${vip(3)}:80`]);

    lb.room = 100;
    await vi.waitFor(() => expect(lb.programmed.get(big)).toHaveLength(5), { timeout: 5_000 });
    expect(agent.failures().size).toBe(0);
    expect(log.info).toHaveBeenCalledWith(expect.objectContaining({ frontend: big, service: 'default/big' }), 'frontend programmed after failing');
    await vi.waitFor(() => expect(etcd.lastView).toMatchObject({ failing: {}, failures: 0, frontends: 3 }), { timeout: 5_000 });
  });

  it('a full map still lets a service fail over: its slots take as many of the new backends as they hold', async () => {
    const lb = new FakeLb(2);
    const { agent, etcd } = await startAgent(lb, [service('a', 1, 1), service('b', 2, 1)]);
    const a = `TCP/${vip(1)}:80`;
    // Its one backend goes; three others (another cluster's, say) are ready: only one fits.
    const moved = service('a', 1, 0);
    moved.backends = ['10.9.0.1', '10.9.0.2', '10.9.0.3'].map((ip) => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' as const } }, ready: true, serving: true, terminating: false }));
    etcd.emit(keys.service(CLUSTER, 'default', 'a'), moved);
    await agent.idle();
    expect(lb.programmed.get(a)).toEqual(['10.9.0.1:8080']);
    expect(agent.failures().get(a)).toMatchObject({ reason: 'map-full', error: expect.stringContaining('needs 3 slots') });
    lb.room = 10;
    await vi.waitFor(() => expect(lb.programmed.get(a)).toHaveLength(3), { timeout: 5_000 });
    expect(agent.failures().size).toBe(0);
  });

  it('a bad value in one service (a RangeError, a bad address) does not stop the pass', async () => {
    const lb = new FakeLb();
    lb.refuse.set(`TCP/${vip(1)}:80`, () => new RangeError('The value of "value" is out of range. It must be >= 0 and <= 65535. Received 65536'));
    lb.refuse.set(`TCP/${vip(2)}:80`, () => new ProgramError('bad-address', `TCP/${vip(2)}:80: backend 0: "10.0.0.256" is not an IPv4 address`));
    const { agent } = await startAgent(lb, [service('range', 1, 1), service('bad', 2, 1), service('ok', 3, 1)]);
    expect([...lb.programmed.keys()]).toEqual([`TCP/${vip(3)}:80`]);
    expect(agent.failures().get(`TCP/${vip(1)}:80`)).toMatchObject({ reason: 'error', error: expect.stringContaining('out of range') });
    expect(agent.failures().get(`TCP/${vip(2)}:80`)).toMatchObject({ reason: 'bad-address' });
  });

  it('forgets a failure when the service changes to something that fits, or goes', async () => {
    const lb = new FakeLb(3);
    const { agent, etcd } = await startAgent(lb, [service('big', 1, 5), service('gone', 2, 9)]);
    expect(agent.failures().size).toBe(2);
    etcd.emit(keys.service(CLUSTER, 'default', 'big'), service('big', 1, 3));
    etcd.emit(keys.service(CLUSTER, 'default', 'gone'));
    await agent.idle();
    expect(agent.failures().size).toBe(0);
    expect([...lb.programmed.keys()]).toEqual([`TCP/${vip(1)}:80`]);
    // No retry of a service that is gone.
    const calls = lb.attempts(`TCP/${vip(2)}:80`);
    await new Promise((r) => setTimeout(r, 300));
    expect(lb.attempts(`TCP/${vip(2)}:80`)).toBe(calls);
  });

  it('retries a removal the datapath refused until the frontend is gone', async () => {
    const lb = new FakeLb();
    const { agent, etcd } = await startAgent(lb, [service('a', 1, 1)]);
    const k = `TCP/${vip(1)}:80`;
    lb.refuse.set(k, () => new ProgramError('kernel', `${k}: delete from skein_services: Operation not permitted (errno 1)`));
    etcd.emit(keys.service(CLUSTER, 'default', 'a'));
    await agent.idle();
    expect(agent.failures().get(k)).toMatchObject({ service: '', reason: 'kernel' });
    lb.refuse.delete(k);
    await vi.waitFor(() => expect(lb.programmed.has(k)).toBe(false), { timeout: 5_000 });
    expect(agent.failures().size).toBe(0);
  });
});

describe('NodeAgent on SocketLb (in-memory maps)', () => {
  it('refuses a frontend with more backends than a slot table holds as too-many-backends, and programs the rest', async () => {
    const maps = new FakeBpfMaps();
    const lb = new SocketLb(undefined, () => maps);
    const { agent, warnings } = await startAgent(lb, [service('huge', 1, 0x10000), service('small', 2, 2)]);
    const huge = `TCP/${vip(1)}:80`;
    expect(maps.decode()).toEqual({ services: { [`TCP/${vip(2)}:80`]: ['10.2.0.0:8080', '10.2.0.1:8080'] }, problems: [] });
    expect(agent.failures().get(huge)).toMatchObject({ service: 'default/huge', reason: 'too-many-backends', error: expect.stringContaining('at most 65535') });
    expect(warnings(huge)[0]![0]).toMatchObject({ reason: 'too-many-backends' });
  });

  it('a full map refuses one service; the next one that fits is still programmed, and the first once room frees', async () => {
    // Master + slots: 4 + 3 entries fit, the 6-backend service (7 entries) does not.
    const maps = new FakeBpfMaps({ skein_services: 10, skein_backends: 100, skein_revnat: 1 });
    const lb = new SocketLb(undefined, () => maps);
    const { agent, etcd } = await startAgent(lb, [service('a', 1, 3), service('big', 2, 6), service('c', 3, 2)]);
    expect(Object.keys(maps.decode().services).sort()).toEqual([`TCP/${vip(1)}:80`, `TCP/${vip(3)}:80`]);
    expect(agent.failures().get(`TCP/${vip(2)}:80`)).toMatchObject({ reason: 'map-full', error: expect.stringMatching(/needs 7 more entries in BPF map skein_services, which holds [47] of 10/) });
    etcd.emit(keys.service(CLUSTER, 'default', 'a'));
    await vi.waitFor(() => expect(maps.decode().services[`TCP/${vip(2)}:80`]).toHaveLength(6), { timeout: 5_000 });
    expect(maps.decode().problems).toEqual([]);
    expect(agent.failures().size).toBe(0);
  });
});

describe('NodeAgent outlier detection (backend health from the datapath)', () => {
  it('ejects a failing backend, reprograms its service at once, publishes the ejection, returns it, and drops health entries of unused backends', async () => {
    const lb = new FakeLb();
    const etcd = new FakeEtcd();
    const view = new MergedView(CLUSTER);
    const s = service('echo', 1, 3);
    view.apply(keys.service(CLUSTER, s.namespace, s.name), JSON.stringify(s));
    const log = { warn: vi.fn(), info: vi.fn() };
    const sample = (consecutive: number) => ({ proto: 'TCP' as const, successes: 0, failures: consecutive, consecutive, lastSuccessMs: 0, lastFailureMs: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0, lastSentMs: 0, refused: 0, lastRefusedMs: 0 });
    const health = new Map([
      ['TCP/10.1.0.0:8080', { backend: 'TCP/10.1.0.0:8080', ...sample(0) }],
      ['TCP/10.1.0.1:8080', { backend: 'TCP/10.1.0.1:8080', ...sample(0) }],
      ['TCP/10.99.0.1:8080', { backend: 'TCP/10.99.0.1:8080', ...sample(0) }], // no service has it
    ]);
    const forgotten: string[] = [];
    let now = 1_000;
    const agent = new NodeAgent({
      etcd: etcd as unknown as Etcd3,
      cluster: CLUSTER,
      node: 'node-1',
      lb,
      log,
      loadView: async () => ({ view, revision: 1 }),
      health: { readHealth: () => health, forgetHealth: (k: string) => (forgotten.push(k), health.delete(k)) },
      healthPollMs: 60_000,
      // The timings below assume a 1 s base ejection (the default is 5 s).
      outliers: { baseEjectionMs: 1000 },
      now: () => now,
    });
    agents.push(agent);
    await agent.start();
    const f = `TCP/${vip(1)}:80`;
    expect(lb.programmed.get(f)).toHaveLength(3);
    agent.pollHealth();
    expect(forgotten).toEqual(['TCP/10.99.0.1:8080']);

    health.get('TCP/10.1.0.1:8080')!.consecutive = 3;
    now += 100;
    agent.pollHealth();
    await agent.idle();
    expect(lb.programmed.get(f)).toEqual(['10.1.0.0:8080', '10.1.0.2:8080']);
    expect(agent.ejections()).toEqual([expect.objectContaining({ backend: 'TCP/10.1.0.1:8080', service: 'default/echo', failures: 3, ejections: 1 })]);
    expect(log.warn).toHaveBeenCalledWith(expect.objectContaining({ backend: 'TCP/10.1.0.1:8080', failures: 3 }), expect.stringContaining('backend ejected'));
    await vi.waitFor(() => expect(etcd.lastView?.ejected).toEqual([expect.objectContaining({ backend: 'TCP/10.1.0.1:8080', service: 'default/echo', failures: 3 })]), { timeout: 5_000 });
    expect(etcd.lastView?.ejectedCount).toBe(1);
    // The ejected backend is still a member of its service: its health entry stays.
    expect(forgotten).toEqual(['TCP/10.99.0.1:8080']);

    // A second one failing would pass the 50% share of three: it stays.
    health.get('TCP/10.1.0.0:8080')!.consecutive = 3;
    now += 100;
    agent.pollHealth();
    await agent.idle();
    expect(lb.programmed.get(f)).toEqual(['10.1.0.0:8080', '10.1.0.2:8080']);

    now += 1_000;
    agent.pollHealth();
    await agent.idle();
    // Back, and the held one takes its place (the share is one of three).
    expect(lb.programmed.get(f)).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expect(log.info).toHaveBeenCalledWith(expect.objectContaining({ backend: 'TCP/10.1.0.1:8080' }), expect.stringContaining('returned'));
  });

  it('a new failure seen through the failure count is probed from the node, with its siblings; failed probes eject it without more client failures', async () => {
    const lb = new FakeLb();
    const etcd = new FakeEtcd();
    const view = new MergedView(CLUSTER);
    const s = service('echo', 1, 3);
    view.apply(keys.service(CLUSTER, s.namespace, s.name), JSON.stringify(s));
    const sample = (backend: string) => ({ backend, proto: 'TCP' as const, successes: 5, failures: 0, consecutive: 0, lastSuccessMs: 500, lastFailureMs: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0, lastSentMs: 0, refused: 0, lastRefusedMs: 0 });
    const health = new Map(['10.1.0.0', '10.1.0.1', '10.1.0.2'].map((ip) => [`TCP/${ip}:8080`, sample(`TCP/${ip}:8080`)]));
    let seq = 0;
    const probed: string[] = [];
    let now = 1_000;
    const agent = new NodeAgent({
      etcd: etcd as unknown as Etcd3,
      cluster: CLUSTER,
      node: 'node-1',
      lb,
      log: { warn: vi.fn(), info: vi.fn() },
      loadView: async () => ({ view, revision: 1 }),
      health: { readHealth: () => health, forgetHealth: () => false, failureSeq: () => seq },
      healthPollMs: 60_000,
      failureSignalMs: 5,
      // The one that failed stays silent; its siblings answer.
      probe: { timeoutMs: 200, maxInFlight: 8, connect: async (ip) => (probed.push(ip), ip !== '10.1.0.1' ? 'ok' : 'failed') },
      now: () => now,
    });
    agents.push(agent);
    await agent.start();
    const f = `TCP/${vip(1)}:80`;
    expect(lb.programmed.get(f)).toHaveLength(3);
    now += 100;
    Object.assign(health.get('TCP/10.1.0.1:8080')!, { failures: 1, consecutive: 1, lastFailureMs: now });
    seq = 1; // no pollHealth call: the agent looks at the count by itself
    await vi.waitFor(() => expect(lb.programmed.get(f)).toEqual(['10.1.0.0:8080', '10.1.0.2:8080']), { timeout: 5_000 });
    expect(probed.filter((ip) => ip === '10.1.0.1')).toHaveLength(2); // it lacked two failures
    expect(probed.filter((ip) => ip !== '10.1.0.1').sort()).toEqual(['10.1.0.0', '10.1.0.0', '10.1.0.0', '10.1.0.2', '10.1.0.2', '10.1.0.2']);
    expect(agent.ejections()).toEqual([expect.objectContaining({ backend: 'TCP/10.1.0.1:8080', failures: 3 })]);
    expect(agent.prober?.started).toBe(8);
  });

  it('probes the backend of a stalled connection (and its siblings) at the signal pace; refused probes eject it at once', async () => {
    const lb = new FakeLb();
    const etcd = new FakeEtcd();
    const view = new MergedView(CLUSTER);
    const s = service('echo', 1, 3);
    view.apply(keys.service(CLUSTER, s.namespace, s.name), JSON.stringify(s));
    const sample = (backend: string) => ({ backend, proto: 'TCP' as const, successes: 5, failures: 0, consecutive: 0, lastSuccessMs: 500, lastFailureMs: 0, sent: 0, unanswered: 0, firstUnansweredMs: 0, lastSentMs: 0, refused: 0, lastRefusedMs: 0 });
    const health = new Map(['10.1.0.0', '10.1.0.1', '10.1.0.2'].map((ip) => [`TCP/${ip}:8080`, sample(`TCP/${ip}:8080`)]));
    let stalled = new Map<string, number>();
    const asked: number[] = [];
    const probed: string[] = [];
    const agent = new NodeAgent({
      etcd: etcd as unknown as Etcd3,
      cluster: CLUSTER,
      node: 'node-1',
      lb,
      log: { warn: vi.fn(), info: vi.fn() },
      loadView: async () => ({ view, revision: 1 }),
      health: { readHealth: () => health, forgetHealth: () => false, failureSeq: () => 0, readStalled: (ms) => (asked.push(ms), stalled) },
      healthPollMs: 60_000,
      failureSignalMs: 5,
      // The stalled backend's host says nothing listens any more; its siblings answer.
      probe: { timeoutMs: 200, maxInFlight: 8, connect: async (ip) => (probed.push(ip), ip !== '10.1.0.1' ? 'ok' : 'refused') },
      now: () => 1_000,
    });
    agents.push(agent);
    await agent.start();
    agent.pollHealth(); // the members are known
    const f = `TCP/${vip(1)}:80`;
    expect(lb.programmed.get(f)).toHaveLength(3);
    stalled = new Map([['TCP/10.1.0.1:8080', 1]]);
    await vi.waitFor(() => expect(lb.programmed.get(f)).toEqual(['10.1.0.0:8080', '10.1.0.2:8080']), { timeout: 5_000 });
    expect(asked.every((ms) => ms === 150)).toBe(true);
    expect(probed.filter((ip) => ip === '10.1.0.1').length).toBeGreaterThanOrEqual(1);
    expect(new Set(probed)).toEqual(new Set(['10.1.0.0', '10.1.0.1', '10.1.0.2'])); // its siblings too (within the bound of 8)
    expect(agent.ejections()).toEqual([expect.objectContaining({ backend: 'TCP/10.1.0.1:8080' })]);
  });
});

describe('NodeAgent health trace (SKEIN_LOG_LEVEL=debug)', () => {
  it('logs each backend whose failure or refusal count moved, by how much, and nothing when the counters stand still or debug is off', async () => {
    const view = new MergedView(CLUSTER);
    const s = service('echo', 1, 2);
    view.apply(keys.service(CLUSTER, s.namespace, s.name), JSON.stringify(s));
    const sample = (backend: string, failures: number, refused: number) => ({ backend, proto: 'TCP' as const, successes: 5, failures, consecutive: failures, lastSuccessMs: 500, lastFailureMs: 900, sent: 0, unanswered: 0, firstUnansweredMs: 0, lastSentMs: 0, refused, lastRefusedMs: refused ? 900 : 0 });
    const A = 'TCP/10.1.0.0:8080';
    const B = 'TCP/10.1.0.1:8080';
    let health = new Map([[A, sample(A, 0, 0)], [B, sample(B, 0, 0)]]);
    const traced = (debug: boolean) => {
      const calls: object[] = [];
      const agent = new NodeAgent({
        etcd: new FakeEtcd() as unknown as Etcd3,
        cluster: CLUSTER,
        node: 'node-1',
        lb: new FakeLb(),
        log: { warn: vi.fn(), info: vi.fn(), debug: (o) => calls.push(o), isLevelEnabled: (l) => debug && l === 'debug' },
        loadView: async () => ({ view, revision: 1 }),
        health: { readHealth: () => health, forgetHealth: () => false },
        healthPollMs: 60_000,
        now: () => 1_000,
      });
      agents.push(agent);
      return { agent, calls };
    };
    const on = traced(true);
    const off = traced(false);
    for (const { agent } of [on, off]) {
      await agent.start();
      agent.pollHealth();
    }
    health = new Map([[A, sample(A, 1, 1)], [B, sample(B, 0, 0)]]);
    for (const { agent } of [on, off]) agent.pollHealth();
    for (const { agent } of [on, off]) agent.pollHealth(); // nothing moved since
    expect(on.calls).toEqual([expect.objectContaining({ backend: A, failures: 1, refused: 1, consecutive: 1 })]);
    expect(off.calls).toEqual([]);
  });
});

describe('NodeAgent routes to remote pods (--peer-routes)', () => {
  it('follows remote nodes from the mesh as they come, move and go; a service change alone rewrites no route', async () => {
    const table = new FakeRouteTable();
    let lists = 0;
    const counted = { ...table, list: () => (lists++, table.list()), replace: table.replace.bind(table), remove: table.remove.bind(table) };
    const routes = new PeerRoutes({ table: counted, log: { info: () => {}, warn: () => {} } });
    const { agent, etcd } = await startAgent(new FakeLb(), [service('a', 1, 1)], { routes });
    const W1_KEY = `${cachePrefix('west')}nodes/w1`;
    const w1 = { name: 'w1', cluster: 'west', addresses: [{ type: 'InternalIP', ip: '192.168.0.11' }], podCidrs: ['10.2.1.0/24'] };
    etcd.emit(W1_KEY, w1);
    await agent.idle();
    expect(table.list()).toEqual([{ dst: '10.2.1.0', prefixLen: 24, via: '192.168.0.11' }]);
    etcd.emit(W1_KEY, { ...w1, addresses: [{ type: 'InternalIP', ip: '192.168.0.21' }] });
    await agent.idle();
    expect(table.list()).toEqual([{ dst: '10.2.1.0', prefixLen: 24, via: '192.168.0.21' }]);
    const before = lists;
    etcd.emit(keys.service(CLUSTER, 'default', 'a'), service('a', 1, 2));
    await agent.idle();
    expect(lists).toBe(before);
    etcd.emit(W1_KEY);
    await agent.idle();
    expect(table.list()).toEqual([]);
  });
});

describe('NodeAgent view: frontends in hash shards', () => {
  /** Service i on its own ClusterIP with one backend (more than vip() can name). */
  const bulk = (i: number, backendIp = `10.200.${i >> 8}.${i & 255}`): GlobalService => ({
    ...service(`bulk-${i}`, 1, 0),
    clusterIps: [`100.65.${i >> 8}.${i & 255}`],
    backends: [{ ip: backendIp, ports: { http: { port: 8080, protocol: 'TCP' as const } }, ready: true, serving: true, terminating: false }],
  });

  it('publishes every frontend (beyond the 500 one value held), and a change rewrites only its shard and the header', async () => {
    const n = 1_200;
    const { agent, etcd } = await startAgent(new FakeLb(), Array.from({ length: n }, (_, i) => bulk(i)));
    await vi.waitFor(() => expect(etcd.lastView?.frontends).toBe(n), { timeout: 5_000 });
    const view = etcd.lastView!;
    expect(Object.keys(view.programmed)).toHaveLength(n);
    expect(view.truncated).toBe(false);
    expect(view.programmed[`TCP/100.65.4.175:80`]).toEqual(['10.200.4.175:8080']); // service 1199, far past the first 500
    const shardKeys = [...etcd.kv.keys()].filter((k) => k.startsWith(keys.agentFrontendsPrefix(CLUSTER, 'node-1')));
    expect(shardKeys).toHaveLength(AGENT_VIEW_SHARDS);
    // Each shard is small: about n / 64 frontends, nowhere near the whole view.
    for (const k of shardKeys) expect(etcd.kv.get(k)!.length).toBeLessThan(4_000);

    etcd.writes.length = 0;
    etcd.emit(keys.service(CLUSTER, 'default', 'bulk-1199'), bulk(1199, '10.201.0.1'));
    await agent.idle();
    await vi.waitFor(() => expect(etcd.lastView?.programmed[`TCP/100.65.4.175:80`]).toEqual(['10.201.0.1:8080']), { timeout: 5_000 });
    expect(etcd.writes).toEqual([keys.agentFrontends(CLUSTER, 'node-1', agentShardOf('TCP/100.65.4.175:80')), keys.agent(CLUSTER, 'node-1')]);
  });

  it("deletes a shard whose last frontend went, so a reader no longer sees that frontend", async () => {
    const { agent, etcd } = await startAgent(new FakeLb(), [bulk(1), bulk(2)]);
    await vi.waitFor(() => expect(etcd.lastView?.frontends).toBe(2), { timeout: 5_000 });
    const gone = keys.agentFrontends(CLUSTER, 'node-1', agentShardOf('TCP/100.65.0.1:80'));
    expect(agentShardOf('TCP/100.65.0.1:80')).not.toBe(agentShardOf('TCP/100.65.0.2:80')); // two shards, one each
    expect(etcd.kv.has(gone)).toBe(true);
    etcd.emit(keys.service(CLUSTER, 'default', 'bulk-1'));
    await agent.idle();
    await vi.waitFor(() => expect(etcd.lastView?.frontends).toBe(1), { timeout: 5_000 });
    expect(etcd.kv.has(gone)).toBe(false);
    expect(Object.keys(etcd.lastView!.programmed)).toEqual(['TCP/100.65.0.2:80']);
  });
});
