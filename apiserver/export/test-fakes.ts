// In-memory stand-ins for what the export units talk to, behind the project's own interfaces: the mesh
// etcd as the StateWriter's KvBackend, the identity bookkeeping as a ReleasableIdentityStore, and the
// Kubernetes API as the one REST call Warning Events make. For the unit tests; nothing here runs in production.
import type { KvBackend, KvOp } from '../../mesh/state-writer.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import type { ReleasableIdentityStore } from './identity.js';

export class MemoryKv implements KvBackend {
  data = new Map<string, string>();
  async list(prefix: string): Promise<Map<string, string>> {
    return new Map([...this.data].filter(([k]) => k.startsWith(prefix)));
  }
  async apply(ops: KvOp[]): Promise<void> {
    for (const op of ops) {
      if (op.value === null) this.data.delete(op.key);
      else this.data.set(op.key, op.value);
    }
  }
}

/** The mesh etcd's identity bookkeeping; `exported` plays the export keys that mark an identity in use. */
export class MemoryIdentityStore implements ReleasableIdentityStore {
  byHash = new Map<string, number>();
  ids = new Map<number, string>();
  exported = new Set<number>();
  calls = { lookup: 0, tryBind: 0, release: 0 };
  /** Set to hold release() until the test lets it finish. */
  releaseGate?: Promise<void>;
  constructor(private readonly isExported: (localId: number) => boolean = (id) => this.exported.has(id)) {}
  async lookup(hash: string): Promise<number | undefined> {
    this.calls.lookup++;
    return this.byHash.get(hash);
  }
  async tryBind(hash: string, id: number): Promise<boolean> {
    this.calls.tryBind++;
    if (this.byHash.has(hash) || this.ids.has(id)) return false;
    this.byHash.set(hash, id);
    this.ids.set(id, hash);
    return true;
  }
  async boundIds(): Promise<Set<number>> {
    return new Set(this.ids.keys());
  }
  async bindings(): Promise<Map<string, number>> {
    return new Map(this.byHash);
  }
  async release(hash: string, id: number): Promise<boolean> {
    this.calls.release++;
    await this.releaseGate;
    if (this.byHash.get(hash) !== id || this.ids.get(id) !== hash || this.isExported(id)) return false;
    this.byHash.delete(hash);
    this.ids.delete(id);
    return true;
  }
}

interface RecordedEvent {
  path: string;
  involvedObject: { kind: string; namespace: string; name: string; uid?: string };
  reason: string;
  type: string;
  message: string;
  reportingInstance: string;
}

/** The Kubernetes API as Warning Events use it: every Event posted, in order. */
export function recordingEventsApi(): { rest: Pick<KubeRest, 'post'>; events: RecordedEvent[] } {
  const events: RecordedEvent[] = [];
  const post = async <T>(path: string, body: unknown): Promise<T> => {
    events.push({ path, ...(body as Omit<RecordedEvent, 'path'>) });
    return body as T;
  };
  return { rest: { post }, events };
}
