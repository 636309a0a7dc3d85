// The BPF socket load balancer from TypeScript: loads datapath/build/sock_lb.o through the native addon,
// attaches its four cgroup programs, and programs services. Map layouts mirror bpf/sock_lb.c exactly.
// Updates are ordered so a concurrent connect() never sees a half-written service: new slots first, the
// master's count last, stale slots removed after the count no longer reaches them. A service that cannot be
// programmed (too many backends, a full map, a bad address) is refused with a ProgramError before any map
// is touched where that can be known, and otherwise rolled back, so its previous programming stays whole.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { buildDir, nativeAddon, type NativeBpfObject } from './native-addon.js';

export interface Frontend {
  ip: string;
  port: number;
  proto: 'TCP' | 'UDP';
}
export interface BackendAddr {
  ip: string;
  port: number;
}

/** Opens the BPF object (sock_lb.o) through the native addon; pinned maps under pinDir are reused. */
function openNative(pinDir?: string): NativeBpfObject {
  return new (nativeAddon().BpfObject)(join(buildDir(), 'sock_lb.o'), pinDir);
}

/**
 * The datapath's fixed limits, as declared in bpf/sock_lb.c (a loaded SocketLb reads the map sizes from the
 * kernel: `limits`). A frontend takes 1 + its backend count entries of skein_services (master + slots); each
 * distinct backend address one entry of skein_backends, shared by every frontend that uses it.
 */
export const SOCK_LB_LIMITS = {
  servicesMapEntries: 262_144,
  backendsMapEntries: 262_144,
  /** struct svc_key's slot is a __u16 and slot 0 is the master: slots 1..65535. */
  maxBackendsPerFrontend: 0xffff,
  /**
   * skein_health: one entry per backend address and protocol this node's sockets used (an LRU map: when full,
   * the least recently used entry makes room, so health counting never refuses a connect).
   */
  healthMapEntries: 65_536,
} as const;

export type ProgramErrorReason = 'too-many-backends' | 'map-full' | 'bad-address' | 'kernel';

/** Why one frontend could not be programmed; nothing of this call is left in the maps. */
export class ProgramError extends Error {
  override readonly name = 'ProgramError';
  constructor(
    readonly reason: ProgramErrorReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const frontendName = (f: Frontend) => `${f.proto}/${f.ip}:${f.port}`;

/**
 * Refuses what the maps cannot hold, before anything is written: a bad frontend or backend address, port or
 * protocol (`bad-address`) and more backends than a frontend's slot table holds (`too-many-backends`).
 */
export function validateService(frontend: Frontend, backends: BackendAddr[], maxBackends: number = SOCK_LB_LIMITS.maxBackendsPerFrontend): void {
  const f = frontendName(frontend);
  if (frontend.proto !== 'TCP' && frontend.proto !== 'UDP') throw new ProgramError('bad-address', `${f}: protocol ${String(frontend.proto)} is not supported by the socket LB (only TCP and UDP)`);
  const bad = (what: string, err: unknown) => new ProgramError('bad-address', `${f}: ${what}: ${(err as Error).message}`, { cause: err });
  try {
    ipBytes(frontend.ip);
    portBytes(frontend.port);
  } catch (err) {
    throw bad('frontend', err);
  }
  if (backends.length > maxBackends) {
    throw new ProgramError(
      'too-many-backends',
      `${f} has ${backends.length} active backends; a frontend holds at most ${maxBackends} (the 16-bit slot of struct svc_key in datapath/bpf/sock_lb.c): reduce the service's endpoints or split it into several services`,
    );
  }
  backends.forEach((b, i) => {
    try {
      ipBytes(b.ip);
      portBytes(b.port);
    } catch (err) {
      throw bad(`backend ${i} (${b.ip}:${b.port})`, err);
    }
  });
}

/** Refuses a write that would take a map past its size: `used` entries now, `adding` more, `max` in all. */
export function checkRoom(map: 'skein_services' | 'skein_backends', used: number, adding: number, max: number, frontend: Frontend): void {
  if (used + adding <= max) return;
  const unit = map === 'skein_services' ? 'a frontend takes 1 + its backend count' : 'one per distinct backend address';
  throw new ProgramError(
    'map-full',
    `${frontendName(frontend)} needs ${adding} more entries in BPF map ${map}, which holds ${used} of ${max} (${unit}): remove services or backends, or raise max_entries in datapath/bpf/sock_lb.c (and unpin the maps so they are recreated)`,
  );
}

/** A map write the kernel refused, as a ProgramError: E2BIG is a full hash map. */
export function programErrorOf(err: unknown, frontend: Frontend): ProgramError {
  if (err instanceof ProgramError) return err;
  const e = err as Error & { errno?: number };
  const f = frontendName(frontend);
  if (e.errno === 7 /* E2BIG */) return new ProgramError('map-full', `${f}: ${e.message}: a BPF map of datapath/bpf/sock_lb.c is full; remove services or backends, or raise its max_entries`, { cause: err });
  if (err instanceof RangeError) return new ProgramError('bad-address', `${f}: a value does not fit its BPF map field: ${e.message}`, { cause: err });
  return new ProgramError('kernel', `${f}: ${e.message ?? String(err)}`, { cause: err });
}

/** What the node agent drives (a fake in unit tests). */
export type ServiceProgrammer = Pick<SocketLb, 'adopt' | 'setService' | 'deleteService'>;

export interface Programmed {
  frontend: Frontend;
  backends: BackendAddr[];
}

/** Every program the datapath attaches to a cgroup (each its own pinned link). */
export const SOCK_LB_PROGRAMS = ['skein_connect4', 'skein_sendmsg4', 'skein_recvmsg4', 'skein_getpeername4', 'skein_sockops', 'skein_ingress', 'skein_egress'] as const;

/** What the datapath saw of one backend (struct health of bpf/sock_lb.c); times in ms of CLOCK_MONOTONIC. */
export interface BackendHealth {
  /** PROTO/ip:port */
  backend: string;
  proto: 'TCP' | 'UDP';
  /** TCP: connects established; UDP: datagrams received from it. */
  successes: number;
  /** TCP: SYN timeouts and connects that ended in SYN_SENT (refused, reset, given up). */
  failures: number;
  /** TCP: failures since the last success. */
  consecutive: number;
  lastSuccessMs: number;
  lastFailureMs: number;
  /** UDP: datagrams sent to it, and those since the last one received (the first of them at firstUnansweredMs). */
  sent: number;
  unanswered: number;
  firstUnansweredMs: number;
  lastSentMs: number;
  /** TCP: connects that ended in SYN_SENT before any retransmission (a reset: nothing listens), and the last. */
  refused: number;
  lastRefusedMs: number;
}

/** The health map's key as the agent names a backend: PROTO/ip:port. */
export const healthKey = (proto: 'TCP' | 'UDP', b: BackendAddr) => `${proto}/${b.ip}:${b.port}`;

/** struct health_key: addr(4, net order) port(2, net order) proto(1) pad(1) */
function healthKeyBytes(key: string): Buffer {
  const m = /^(TCP|UDP)\/([\d.]+):(\d+)$/.exec(key);
  if (!m) throw new Error(`"${key}" is not a backend key (PROTO/ip:port)`);
  const k = Buffer.alloc(8);
  ipBytes(m[2]!).copy(k, 0);
  portBytes(Number(m[3])).copy(k, 4);
  k[6] = m[1] === 'TCP' ? 6 : 17;
  return k;
}

/** struct health: eleven __u64 (host order); nanoseconds become milliseconds. */
function decodeHealth(k: Buffer, v: Buffer): BackendHealth {
  const u = (i: number) => Number(v.readBigUInt64LE(i * 8));
  const ms = (i: number) => Number(v.readBigUInt64LE(i * 8) / 1000n) / 1000;
  const proto = k[6] === 6 ? 'TCP' : 'UDP';
  return {
    backend: `${proto}/${[...k.subarray(0, 4)].join('.')}:${k.readUInt16BE(4)}`,
    proto,
    successes: u(0),
    failures: u(1),
    consecutive: u(2),
    lastSuccessMs: ms(3),
    lastFailureMs: ms(4),
    sent: u(5),
    unanswered: u(6),
    firstUnansweredMs: ms(7),
    lastSentMs: ms(8),
    refused: u(9),
    lastRefusedMs: ms(10),
  };
}

/** Milliseconds of CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns (and of libuv's hrtime). */
export const monotonicMs = () => Number(process.hrtime.bigint() / 1000n) / 1000;

/**
 * The kernel's tick rate (CONFIG_HZ), which BPF_SOCK_OPS_TIMEOUT_INIT answers in (jiffies): from the kernel's
 * config (/proc/config.gz, /boot/config-<release>), else measured from /proc/timer_list, else 250 (Debian's).
 */
export function kernelHz(): number {
  const fromConfig = (text: string) => Number(/^CONFIG_HZ=(\d+)$/m.exec(text)?.[1]) || undefined;
  try {
    const hz = fromConfig(gunzipSync(readFileSync('/proc/config.gz')).toString());
    if (hz) return hz;
  } catch {
    // not built with IKCONFIG_PROC
  }
  try {
    const release = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    const hz = fromConfig(readFileSync(`/boot/config-${release}`, 'utf8'));
    if (hz) return hz;
  } catch {
    // no config installed
  }
  try {
    const sample = () => ({ j: Number(/^jiffies: (\d+)$/m.exec(readFileSync('/proc/timer_list', 'utf8'))?.[1]), t: monotonicMs() });
    const a = sample();
    const until = a.t + 200;
    while (monotonicMs() < until); // a one-off 200 ms measurement at start
    const b = sample();
    const measured = ((b.j - a.j) * 1000) / (b.t - a.t);
    if (Number.isFinite(measured) && measured > 0) return [100, 250, 300, 1000].reduce((best, hz) => (Math.abs(hz - measured) < Math.abs(best - measured) ? hz : best));
  } catch {
    // no timer_list
  }
  return 250;
}

function ipBytes(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`"${ip}" is not an IPv4 address`);
  return Buffer.from(parts);
}

function portBytes(port: number): Buffer {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`port ${port} is out of range (1-65535)`);
  const b = Buffer.alloc(2);
  b.writeUInt16BE(port);
  return b;
}

/** struct svc_key: addr(4, net order) port(2, net order) proto(1) pad(1) slot(2, host order) pad2(2) */
function serviceKey(f: Frontend, slot: number): Buffer {
  const k = Buffer.alloc(12);
  ipBytes(f.ip).copy(k, 0);
  portBytes(f.port).copy(k, 4);
  k[6] = f.proto === 'TCP' ? 6 : 17;
  k.writeUInt16LE(slot, 8);
  return k;
}

/** struct svc_value: count(4) backend_id(4), host order */
function serviceValue(count: number, backendId: number): Buffer {
  const v = Buffer.alloc(8);
  v.writeUInt32LE(count, 0);
  v.writeUInt32LE(backendId, 4);
  return v;
}

/** struct backend: addr(4, net order) port(2, net order) pad(2) */
function backendValue(b: BackendAddr): Buffer {
  const v = Buffer.alloc(8);
  ipBytes(b.ip).copy(v, 0);
  portBytes(b.port).copy(v, 4);
  return v;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

const addrKey = (b: BackendAddr) => `${b.ip}:${b.port}`;
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

export class SocketLb {
  private readonly obj: NativeBpfObject;
  private readonly backendIds = new Map<string, { id: number; refs: number }>();
  private readonly services = new Map<string, BackendAddr[]>();
  private nextBackendId = 1;
  private links: number[] = [];
  /** Entries of skein_services written through this object (masters + slots), to refuse what cannot fit. */
  private serviceEntries = 0;
  /** The limits of the maps as loaded (a reused pin keeps the size it was created with). */
  readonly limits: { servicesMapEntries: number; backendsMapEntries: number; maxBackendsPerFrontend: number; healthMapEntries: number };

  /**
   * With `pinDir`, maps are pinned there and reused: a restarted agent adopts what the kernel still uses.
   * `open` stands in for the native addon in unit tests.
   */
  constructor(
    private readonly pinDir?: string,
    open: (pinDir?: string) => NativeBpfObject = openNative,
  ) {
    if (pinDir) mkdirSync(pinDir, { recursive: true });
    this.obj = open(pinDir);
    this.limits = {
      servicesMapEntries: this.obj.maxEntries('skein_services'),
      backendsMapEntries: this.obj.maxEntries('skein_backends'),
      maxBackendsPerFrontend: SOCK_LB_LIMITS.maxBackendsPerFrontend,
      healthMapEntries: this.obj.maxEntries('skein_health'),
    };
  }

  /** The maps an older datapath pinned with another layout, made afresh on load (an upgrade across a layout change). */
  pinnedMapsReplaced(): string[] {
    return this.obj.replacedPins();
  }

  /**
   * Removes pins under `pinDir` that name no map of this datapath (a map an older one had, e.g. after a rename):
   * nothing uses them, and left pinned they would hold kernel memory until the node restarts.
   */
  removeObsoletePins(): string[] {
    if (!this.pinDir) return [];
    const maps = new Set(this.obj.maps());
    const obsolete = readdirSync(this.pinDir, { withFileTypes: true }).filter((e) => e.isFile() && !maps.has(e.name)).map((e) => e.name);
    for (const name of obsolete) rmSync(join(this.pinDir, name), { force: true });
    return obsolete;
  }

  /**
   * Attaches all seven programs (the four sock_addr hooks, sockops and the ingress and egress hooks) to a cgroup v2 directory (they apply to
   * every process below it). With `linkPinDir`, links are pinned there; a program whose pinned link already
   * exists (an earlier run of the agent) is swapped into that link in place, so an upgraded agent's programs
   * take over without a moment detached; they use the same pinned maps this object adopted.
   */
  attach(cgroup: string, linkPinDir?: string): void {
    for (const p of SOCK_LB_PROGRAMS) {
      if (linkPinDir && existsSync(join(linkPinDir, p))) {
        this.obj.replaceLink(join(linkPinDir, p), p);
        continue;
      }
      const id = this.obj.attachCgroup(p, cgroup);
      if (linkPinDir) {
        mkdirSync(linkPinDir, { recursive: true });
        this.obj.pinLink(id, join(linkPinDir, p));
      }
      this.links.push(id);
    }
  }

  /** Detaches what this object attached, and pinned links of an earlier run under `linkPinDir`. */
  detach(linkPinDir?: string): void {
    for (const id of this.links) this.obj.detach(id);
    this.links = [];
    if (linkPinDir) rmSync(linkPinDir, { recursive: true, force: true });
  }

  /**
   * Rebuilds what is programmed from the (pinned, reused) maps, so a restarted agent continues where the
   * last one stopped instead of handing out backend IDs that live slots still point to.
   */
  adopt(): Programmed[] {
    const addrOf = new Map<number, BackendAddr>();
    const backendKeys = this.obj.keys('skein_backends');
    for (const k of backendKeys) {
      const v = this.obj.lookup('skein_backends', k);
      if (!v) continue;
      const id = k.readUInt32LE(0);
      addrOf.set(id, { ip: [...v.subarray(0, 4)].join('.'), port: v.readUInt16BE(4) });
      this.nextBackendId = Math.max(this.nextBackendId, id + 1);
    }
    const serviceKeys = this.obj.keys('skein_services');
    const frontendOf = (k: Buffer): Frontend => ({ ip: [...k.subarray(0, 4)].join('.'), port: k.readUInt16BE(4), proto: k[6] === 6 ? 'TCP' : 'UDP' });
    const countOf = new Map<string, number>();
    const used = new Set<number>();
    const out: Programmed[] = [];
    for (const k of serviceKeys) {
      if (k.readUInt16LE(8) !== 0) continue;
      const frontend = frontendOf(k);
      const count = this.obj.lookup('skein_services', k)?.readUInt32LE(0) ?? 0;
      countOf.set(frontendName(frontend), count);
      const backends: BackendAddr[] = [];
      for (let slot = 1; slot <= count; slot++) {
        const id = this.obj.lookup('skein_services', serviceKey(frontend, slot))?.readUInt32LE(4);
        const addr = id === undefined ? undefined : addrOf.get(id);
        if (!addr || id === undefined) continue;
        used.add(id);
        backends.push(addr);
        const key = addrKey(addr);
        const e = this.backendIds.get(key) ?? { id, refs: 0 };
        e.refs++;
        this.backendIds.set(key, e);
      }
      this.services.set(frontendName(frontend), backends);
      out.push({ frontend, backends });
    }
    // Slots no count reaches (an agent that died between a service's slots and its count) and backends no
    // live slot uses would hold map entries forever; no connect can read them, so they go.
    this.serviceEntries = 0;
    for (const k of serviceKeys) {
      const slot = k.readUInt16LE(8);
      if (slot === 0 || slot <= (countOf.get(frontendName(frontendOf(k))) ?? 0)) this.serviceEntries++;
      else this.obj.remove('skein_services', k);
    }
    for (const id of addrOf.keys()) if (!used.has(id)) this.obj.remove('skein_backends', u32(id));
    return out;
  }

  /** Entries in use of the two maps a service takes room in (what this object wrote or adopted). */
  usage(): { servicesMapEntries: number; backendsMapEntries: number } {
    return { servicesMapEntries: this.serviceEntries, backendsMapEntries: this.backendIds.size };
  }

  private backendId(b: BackendAddr): number {
    const key = addrKey(b);
    let e = this.backendIds.get(key);
    if (!e) {
      // Recorded only once the kernel took it, so a full map leaves no phantom ID behind.
      this.obj.update('skein_backends', u32(this.nextBackendId), backendValue(b));
      e = { id: this.nextBackendId++, refs: 0 };
      this.backendIds.set(key, e);
    }
    e.refs++;
    return e.id;
  }

  private releaseBackend(b: BackendAddr): void {
    const key = addrKey(b);
    const e = this.backendIds.get(key);
    if (!e || --e.refs > 0) return;
    this.backendIds.delete(key);
    this.obj.remove('skein_backends', u32(e.id));
  }

  /**
   * Makes `frontend` balance over exactly `backends` (none: connects pass through untranslated). Throws a
   * ProgramError when it cannot; the frontend then keeps exactly what it had (or stays absent).
   */
  setService(frontend: Frontend, backends: BackendAddr[]): void {
    validateService(frontend, backends, this.limits.maxBackendsPerFrontend);
    const fkey = frontendName(frontend);
    const had = this.services.get(fkey);
    if (backends.length === 0) return this.clear(frontend, had);
    const previous = had ?? [];
    const prevIds = previous.map((b) => this.backendIds.get(addrKey(b))!.id);
    checkRoom('skein_backends', this.backendIds.size, new Set(backends.map(addrKey).filter((k) => !this.backendIds.has(k))).size, this.limits.backendsMapEntries, frontend);
    checkRoom('skein_services', this.serviceEntries, Math.max(0, backends.length - previous.length) + (had ? 0 : 1), this.limits.servicesMapEntries, frontend);

    // What this call did, to undo when the kernel still refuses a write (the map filled by others, say).
    const acquired: BackendAddr[] = [];
    const written: number[] = [];
    try {
      const ids = backends.map((b) => {
        const id = this.backendId(b);
        acquired.push(b);
        return id;
      });
      // Inserts (the only writes a full map refuses) before overwriting slots the live count still reaches.
      for (const slot of [...range(previous.length + 1, ids.length), ...range(1, Math.min(ids.length, previous.length))]) {
        this.obj.update('skein_services', serviceKey(frontend, slot), serviceValue(0, ids[slot - 1]!));
        written.push(slot);
        if (slot > previous.length) this.serviceEntries++;
      }
      this.obj.update('skein_services', serviceKey(frontend, 0), serviceValue(ids.length, 0));
    } catch (err) {
      const failed = programErrorOf(err, frontend);
      const undo = this.rollback(frontend, written, prevIds, acquired);
      if (undo) failed.message += `; undoing the partial write failed too (${(undo as Error).message}), so the frontend may be half-programmed until the next attempt`;
      throw failed;
    }
    if (!had) this.serviceEntries++;
    this.services.set(fkey, [...backends]);
    // The count no longer reaches stale slots, and no slot points to a released backend.
    this.cleanUp(frontend, range(backends.length + 1, previous.length), previous);
  }

  private clear(frontend: Frontend, had: BackendAddr[] | undefined): void {
    // The master first: connects pass through from this moment, whatever the slots hold.
    if (this.obj.remove('skein_services', serviceKey(frontend, 0)) && had) this.serviceEntries--;
    this.services.delete(frontendName(frontend));
    this.cleanUp(frontend, range(1, had?.length ?? 0), had ?? []);
  }

  /** Removes slots and releases backends; a failure does not stop the rest (it is thrown at the end). */
  private cleanUp(frontend: Frontend, slots: number[], release: BackendAddr[]): void {
    let failure: unknown;
    for (const slot of slots) {
      try {
        if (this.obj.remove('skein_services', serviceKey(frontend, slot))) this.serviceEntries--;
      } catch (err) {
        failure ??= err;
      }
    }
    for (const b of release) {
      try {
        this.releaseBackend(b);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure) throw programErrorOf(failure, frontend);
  }

  /** Restores overwritten slots, removes inserted ones, then releases backends no slot points to any more. */
  private rollback(frontend: Frontend, written: number[], prevIds: number[], acquired: BackendAddr[]): unknown {
    let failure: unknown;
    const step = (fn: () => void) => {
      try {
        fn();
      } catch (err) {
        failure ??= err;
      }
    };
    for (const slot of written.reverse()) {
      if (slot <= prevIds.length) step(() => this.obj.update('skein_services', serviceKey(frontend, slot), serviceValue(0, prevIds[slot - 1]!)));
      else
        step(() => {
          if (this.obj.remove('skein_services', serviceKey(frontend, slot))) this.serviceEntries--;
        });
    }
    for (const b of acquired) step(() => this.releaseBackend(b));
    return failure;
  }

  deleteService(frontend: Frontend): void {
    this.setService(frontend, []);
  }

  /** Every backend's health as the datapath counted it (skein_health), by PROTO/ip:port. */
  readHealth(): Map<string, BackendHealth> {
    const out = new Map<string, BackendHealth>();
    for (const [k, v] of this.obj.entries('skein_health')) {
      const h = decodeHealth(k, v);
      out.set(h.backend, h);
    }
    return out;
  }

  /**
   * Backends with a stalled connection (skein_pending): our first data left at least `stalledMs` before
   * `nowMs` (CLOCK_MONOTONIC ms) and the backend has sent nothing since the connect. By TCP/ip:port, when the
   * latest such request was sent (CLOCK_MONOTONIC ms).
   */
  readStalled(stalledMs: number, nowMs: number = monotonicMs()): Map<string, number> {
    const out = new Map<string, number>();
    // Nothing sent and unanswered: no entry can be stalled (idle connections are not read every time).
    if ((this.obj.lookup('skein_pending_sent', u32(0))?.readBigUInt64LE(0) ?? 0n) === 0n) return out;
    for (const [, v] of this.obj.entries('skein_pending')) {
      const sent = Number(v.readBigUInt64LE(8) / 1000n) / 1000;
      if (sent === 0 || nowMs - sent < stalledMs) continue;
      const key = `TCP/${[...v.subarray(0, 4)].join('.')}:${v.readUInt16BE(4)}`;
      out.set(key, Math.max(out.get(key) ?? 0, sent));
    }
    return out;
  }

  /** TCP failures the datapath counted so far (all backends): when it moves, readHealth has news. */
  failureSeq(): number {
    return Number(this.obj.lookup('skein_failure_seq', u32(0))?.readBigUInt64LE(0) ?? 0n);
  }

  /** Drops a backend's health entry (one no frontend uses any more); false when there was none. */
  forgetHealth(key: string): boolean {
    return this.obj.remove('skein_health', healthKeyBytes(key));
  }

  /**
   * The initial SYN retransmission timeout of connects the LB rewrites, in ms (0: the kernel's 1 s). The
   * kernel takes it in jiffies: rounded up to whole ticks of `hz` (CONFIG_HZ).
   */
  setSynRto(ms: number, hz: number = kernelHz()): number {
    if (!Number.isInteger(ms) || ms < 0 || ms > 120_000) throw new Error(`SYN RTO ${ms} ms is out of range (0-120000)`);
    const jiffies = ms === 0 ? 0 : Math.max(1, Math.ceil((ms * hz) / 1000));
    const v = Buffer.alloc(8);
    v.writeUInt32LE(jiffies, 0);
    this.obj.update('skein_config', u32(0), v);
    return jiffies;
  }

  /** The active backend count the datapath sees for a frontend (0: not programmed). */
  activeCount(frontend: Frontend): number {
    return this.obj.lookup('skein_services', serviceKey(frontend, 0))?.readUInt32LE(0) ?? 0;
  }

  close(): void {
    this.obj.close();
  }
}
