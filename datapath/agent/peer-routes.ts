// Routes to connected clusters' pods where clusters share an L2 network (kind clusters on one Docker
// network, nodes on one VLAN): each remote node's pod CIDRs via that node's address, as Cilium's
// auto-direct-node-routes does. Off by default (`--peer-routes`). What a peer may claim was checked before it
// reached the cache (mesh/address-policy.ts: its node addresses are never loopback, link-local or the like; its
// pod CIDRs are inside what `skein connect` pinned and overlap nothing local); the kernel refuses a gateway
// that is not on a connected network. Routes carry Skein's protocol and metric (native/routes.cc), so the
// agent finds its own after a restart and never replaces or removes an operator's route.
import type { MeshNode } from '../../mesh/schema/values.js';
import type { RouteTable } from '../kernel-routes.js';
import type { NativeRoute } from '../native-addon.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

interface Wanted extends NativeRoute {
  node: string;
}

/** The node address a pod CIDR is reached through: its InternalIP, else the first address it has. */
const gatewayOf = (n: MeshNode) => (n.addresses.find((a) => a.type === 'InternalIP') ?? n.addresses[0])?.ip;

/** One route per remote pod CIDR; when two nodes claim the same CIDR the first by cluster and name keeps it. */
export function wantedRoutes(nodes: MeshNode[], log?: Log): Map<string, Wanted> {
  const wanted = new Map<string, Wanted>();
  const ordered = [...nodes].sort((a, b) => a.cluster.localeCompare(b.cluster) || a.name.localeCompare(b.name));
  for (const n of ordered) {
    const via = gatewayOf(n);
    if (!via) continue;
    for (const cidr of n.podCidrs) {
      const [dst, len] = cidr.split('/') as [string, string];
      const other = wanted.get(cidr);
      if (other) {
        log?.warn({ cidr, node: `${n.cluster}/${n.name}`, keptFor: other.node }, 'two remote nodes claim one pod CIDR; routing it to the first');
        continue;
      }
      wanted.set(cidr, { dst, prefixLen: Number(len), via, node: `${n.cluster}/${n.name}` });
    }
  }
  return wanted;
}

const errnoOf = (err: unknown) => (err as { errno?: number }).errno;
const ESRCH = 3;

export class PeerRoutes {
  /** CIDR → why its route could not be installed (logged once per reason). */
  private readonly failing = new Map<string, string>();

  constructor(private readonly o: { table: RouteTable; log: Log }) {}

  /** Makes the kernel's Skein routes exactly those the nodes want. Returns the CIDRs that failed. */
  sync(nodes: MeshNode[]): string[] {
    const wanted = wantedRoutes(nodes, this.o.log);
    const have = new Map(this.o.table.list().map((r) => [`${r.dst}/${r.prefixLen}`, r]));
    for (const [cidr, w] of wanted) {
      if (have.get(cidr)?.via === w.via) {
        this.failing.delete(cidr);
        continue;
      }
      try {
        this.o.table.replace(w.dst, w.prefixLen, w.via);
        this.failing.delete(cidr);
        this.o.log.info({ cidr, via: w.via, node: w.node }, 'route to a remote node\'s pods installed');
      } catch (err) {
        const why = (err as Error).message;
        if (this.failing.get(cidr) !== why) this.o.log.warn({ cidr, via: w.via, node: w.node, err: why }, 'could not route a remote node\'s pods (is its address on a network this node shares?)');
        this.failing.set(cidr, why);
      }
    }
    for (const [cidr, r] of have) if (!wanted.has(cidr)) this.remove(cidr, r);
    for (const cidr of this.failing.keys()) if (!wanted.has(cidr)) this.failing.delete(cidr);
    return [...this.failing.keys()];
  }

  /** Removes every Skein route (peer routes turned off, or a cleanup). */
  removeAll(): number {
    const routes = this.o.table.list();
    for (const r of routes) this.remove(`${r.dst}/${r.prefixLen}`, r);
    return routes.length;
  }

  /** What is installed now, for status. */
  installed(): NativeRoute[] {
    return this.o.table.list();
  }

  private remove(cidr: string, r: NativeRoute): void {
    try {
      this.o.table.remove(r.dst, r.prefixLen);
      this.o.log.info({ cidr, via: r.via }, 'route to a remote node\'s pods removed');
    } catch (err) {
      if (errnoOf(err) !== ESRCH) this.o.log.warn({ cidr, err: (err as Error).message }, 'could not remove a route to a remote node\'s pods');
    }
  }
}
