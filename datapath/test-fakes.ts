// In-memory stand-ins for unit tests: the native addon's BPF object with hash maps that refuse an insert
// past max_entries the way the kernel does (E2BIG), so SocketLb's validation and rollback run without BPF;
// and the node's Skein routes (kernel-routes.ts), refusing a gateway off every connected network as the kernel does.
import type { RouteTable } from './kernel-routes.js';
import type { NativeBpfObject, NativeRoute } from './native-addon.js';

export class FakeBpfMaps implements NativeBpfObject {
  readonly store = new Map<string, Map<string, Buffer>>();
  /** Every write and delete, in order ("update skein_services <key hex>"), to check what touched the maps. */
  readonly ops: string[] = [];
  /** When set, only this many more inserts of a new key succeed (then E2BIG), as a map someone else filled. */
  insertsLeft?: number;
  /** When it returns an error for a write, that write throws it (a refusal the sizes alone cannot cause). */
  failUpdate?: (map: string, key: Buffer) => Error | undefined;

  readonly sizes: Record<string, number>;

  constructor(sizes: Record<string, number> = { skein_services: 262_144, skein_backends: 262_144, skein_revnat: 262_144 }) {
    this.sizes = { skein_health: 65_536, skein_config: 1, skein_failure_seq: 1, skein_pending: 65_536, skein_pending_sent: 1, ...sizes };
    for (const name of Object.keys(this.sizes)) this.store.set(name, new Map());
  }

  private map(name: string): Map<string, Buffer> {
    const m = this.store.get(name);
    if (!m) throw new Error(`no map named ${name}`);
    return m;
  }

  programs(): string[] {
    return ['skein_connect4', 'skein_sendmsg4', 'skein_recvmsg4', 'skein_getpeername4', 'skein_sockops'];
  }
  maps(): string[] {
    return [...this.store.keys()];
  }
  attachCgroup(): number {
    return 1;
  }
  pinLink(): void {
    // nothing is pinned in memory
  }
  detach(): boolean {
    return true;
  }
  update(map: string, key: Buffer, value: Buffer): void {
    const m = this.map(map);
    const k = key.toString('hex');
    const refused = this.failUpdate?.(map, key);
    if (refused) throw refused;
    if (!m.has(k)) {
      if (m.size >= this.sizes[map]! || this.insertsLeft === 0) throw Object.assign(new Error(`update ${map}: Argument list too long (errno 7)`), { errno: 7 });
      if (this.insertsLeft !== undefined) this.insertsLeft--;
    }
    this.ops.push(`update ${map} ${k}`);
    m.set(k, Buffer.from(value));
  }
  lookup(map: string, key: Buffer): Buffer | null {
    return this.map(map).get(key.toString('hex')) ?? null;
  }
  remove(map: string, key: Buffer): boolean {
    this.ops.push(`remove ${map} ${key.toString('hex')}`);
    return this.map(map).delete(key.toString('hex'));
  }
  keys(map: string): Buffer[] {
    return [...this.map(map).keys()].map((k) => Buffer.from(k, 'hex'));
  }
  entries(map: string): [Buffer, Buffer][] {
    return [...this.map(map)].map(([k, v]) => [Buffer.from(k, 'hex'), Buffer.from(v)]);
  }
  replaceLink(): void {
    // nothing is pinned in memory
  }
  maxEntries(map: string): number {
    this.map(map);
    return this.sizes[map]!;
  }
  close(): void {
    // nothing to release
  }
  /**
   * What the datapath would balance over, decoded as sock_lb.c reads it: frontend → backends of slots
   * 1..count. Also the problems a connect could hit: a slot the count reaches that is missing, or one that
   * names an absent backend.
   */
  decode(): { services: Record<string, string[]>; problems: string[] } {
    const services: Record<string, string[]> = {};
    const problems: string[] = [];
    const svc = this.store.get('skein_services')!;
    const backends = this.store.get('skein_backends')!;
    for (const [k, v] of svc) {
      const key = Buffer.from(k, 'hex');
      if (key.readUInt16LE(8) !== 0) continue;
      const name = `${key[6] === 6 ? 'TCP' : 'UDP'}/${[...key.subarray(0, 4)].join('.')}:${key.readUInt16BE(4)}`;
      const count = v.readUInt32LE(0);
      services[name] = [];
      for (let slot = 1; slot <= count; slot++) {
        key.writeUInt16LE(slot, 8);
        const s = svc.get(key.toString('hex'));
        const id = s?.readUInt32LE(4);
        const idKey = Buffer.alloc(4);
        idKey.writeUInt32LE(id ?? 0);
        const b = id === undefined ? undefined : backends.get(idKey.toString('hex'));
        if (!b) {
          problems.push(`${name} slot ${slot}: ${s ? `backend ${id} missing` : 'missing'}`);
          continue;
        }
        services[name].push(`${[...b.subarray(0, 4)].join('.')}:${b.readUInt16BE(4)}`);
      }
    }
    return { services, problems };
  }

  replacedPins = (): string[] => [];

  /** A copy of every map's content, to compare before and after a refused write. */
  snapshot(): Record<string, Record<string, string>> {
    return Object.fromEntries([...this.store].map(([name, m]) => [name, Object.fromEntries([...m].map(([k, v]) => [k, v.toString('hex')]))]));
  }
}

/** The kernel's main table as far as Skein's protocol goes; `foreign` are an operator's routes it must never see or touch. */
export class FakeRouteTable implements RouteTable {
  readonly routes = new Map<string, NativeRoute>();
  readonly foreign = new Map<string, string>([['10.2.1.0/24', '192.168.0.99']]);
  unreachable = new Set<string>();
  list = () => [...this.routes.values()];
  replace(dst: string, prefixLen: number, via: string): void {
    if (this.unreachable.has(via)) throw Object.assign(new Error('route replace: Network is unreachable (errno 101)'), { errno: 101 });
    this.routes.set(`${dst}/${prefixLen}`, { dst, prefixLen, via });
  }
  remove(dst: string, prefixLen: number): void {
    if (!this.routes.delete(`${dst}/${prefixLen}`)) throw Object.assign(new Error('route delete: No such process (errno 3)'), { errno: 3 });
  }
}
