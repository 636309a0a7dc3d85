// The BPF socket load balancer from TypeScript: loads datapath/build/sock_lb.o through the native addon,
// attaches its four cgroup programs, and programs services. Map layouts mirror bpf/sock_lb.c exactly.
// Updates are ordered so a concurrent connect() never sees a half-written service: new slots first, the
// master's count last, stale slots removed after the count no longer reaches them.
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sourceDir } from '../mtls/source-dir.js';

export interface Frontend {
  ip: string;
  port: number;
  proto: 'TCP' | 'UDP';
}
export interface BackendAddr {
  ip: string;
  port: number;
}

interface NativeBpfObject {
  programs(): string[];
  maps(): string[];
  attachCgroup(program: string, cgroup: string): number;
  pinLink(id: number, path: string): void;
  detach(id: number): boolean;
  update(map: string, key: Buffer, value: Buffer): void;
  lookup(map: string, key: Buffer): Buffer | null;
  remove(map: string, key: Buffer): boolean;
  keys(map: string): Buffer[];
  close(): void;
}

/** From datapath/ (source) or dist/datapath/ (compiled): the build output lives in the source tree. */
const buildDir = () => join(sourceDir(import.meta.url), 'build');

const native = createRequire(import.meta.url)(join(buildDir(), 'skein_bpf.node')) as { BpfObject: new (path: string, pinDir?: string) => NativeBpfObject };

export interface Programmed {
  frontend: Frontend;
  backends: BackendAddr[];
}

const PROGRAMS = ['skein_connect4', 'skein_sendmsg4', 'skein_recvmsg4', 'skein_getpeername4'] as const;

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

export class SocketLb {
  private readonly obj: NativeBpfObject;
  private readonly backendIds = new Map<string, { id: number; refs: number }>();
  private readonly services = new Map<string, BackendAddr[]>();
  private nextBackendId = 1;
  private links: number[] = [];

  /** With `pinDir`, maps are pinned there and reused: a restarted agent adopts what the kernel still uses. */
  constructor(pinDir?: string) {
    if (pinDir) mkdirSync(pinDir, { recursive: true });
    this.obj = new native.BpfObject(join(buildDir(), 'sock_lb.o'), pinDir);
  }

  /**
   * Attaches all four programs to a cgroup v2 directory (they apply to every process below it). With
   * `linkPinDir`, links are pinned there; programs whose pinned link already exists (an earlier run of the
   * agent) are left attached as they are: they use the same pinned maps this object adopted.
   */
  attach(cgroup: string, linkPinDir?: string): void {
    for (const p of PROGRAMS) {
      if (linkPinDir && existsSync(join(linkPinDir, p))) continue;
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
    for (const k of this.obj.keys('skein_backends')) {
      const v = this.obj.lookup('skein_backends', k);
      if (!v) continue;
      const id = k.readUInt32LE(0);
      addrOf.set(id, { ip: [...v.subarray(0, 4)].join('.'), port: v.readUInt16BE(4) });
      this.nextBackendId = Math.max(this.nextBackendId, id + 1);
    }
    const out: Programmed[] = [];
    for (const k of this.obj.keys('skein_services')) {
      if (k.readUInt16LE(8) !== 0) continue;
      const frontend: Frontend = { ip: [...k.subarray(0, 4)].join('.'), port: k.readUInt16BE(4), proto: k[6] === 6 ? 'TCP' : 'UDP' };
      const count = this.obj.lookup('skein_services', k)?.readUInt32LE(0) ?? 0;
      const backends: BackendAddr[] = [];
      for (let slot = 1; slot <= count; slot++) {
        const id = this.obj.lookup('skein_services', serviceKey(frontend, slot))?.readUInt32LE(4);
        const addr = id === undefined ? undefined : addrOf.get(id);
        if (!addr || id === undefined) continue;
        backends.push(addr);
        const key = `${addr.ip}:${addr.port}`;
        const e = this.backendIds.get(key) ?? { id, refs: 0 };
        e.refs++;
        this.backendIds.set(key, e);
      }
      this.services.set(`${frontend.proto}/${frontend.ip}:${frontend.port}`, backends);
      out.push({ frontend, backends });
    }
    return out;
  }

  private backendId(b: BackendAddr): number {
    const key = `${b.ip}:${b.port}`;
    let e = this.backendIds.get(key);
    if (!e) {
      e = { id: this.nextBackendId++, refs: 0 };
      this.backendIds.set(key, e);
      this.obj.update('skein_backends', u32(e.id), backendValue(b));
    }
    e.refs++;
    return e.id;
  }

  private releaseBackend(b: BackendAddr): void {
    const key = `${b.ip}:${b.port}`;
    const e = this.backendIds.get(key);
    if (!e || --e.refs > 0) return;
    this.backendIds.delete(key);
    this.obj.remove('skein_backends', u32(e.id));
  }

  /** Makes `frontend` balance over exactly `backends` (none: connects pass through untranslated). */
  setService(frontend: Frontend, backends: BackendAddr[]): void {
    const fkey = `${frontend.proto}/${frontend.ip}:${frontend.port}`;
    const previous = this.services.get(fkey) ?? [];
    const ids = backends.map((b) => this.backendId(b));
    ids.forEach((id, i) => this.obj.update('skein_services', serviceKey(frontend, i + 1), serviceValue(0, id)));
    this.obj.update('skein_services', serviceKey(frontend, 0), serviceValue(ids.length, 0));
    for (let slot = ids.length + 1; slot <= previous.length; slot++) this.obj.remove('skein_services', serviceKey(frontend, slot));
    for (const b of previous) this.releaseBackend(b);
    if (backends.length === 0) {
      this.obj.remove('skein_services', serviceKey(frontend, 0));
      this.services.delete(fkey);
    } else this.services.set(fkey, [...backends]);
  }

  deleteService(frontend: Frontend): void {
    this.setService(frontend, []);
  }

  /** The active backend count the datapath sees for a frontend (0: not programmed). */
  activeCount(frontend: Frontend): number {
    return this.obj.lookup('skein_services', serviceKey(frontend, 0))?.readUInt32LE(0) ?? 0;
  }

  close(): void {
    this.obj.close();
  }
}
