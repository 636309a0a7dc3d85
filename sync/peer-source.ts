// The narrow view of a peer's mesh etcd that replication and credential rotation need. The real one is
// etcd-peer-source.ts (etcd3 over mTLS); tests use an in-memory peer.

/** One key of the peer's etcd as replication sees it. */
export interface PeerKv {
  key: string;
  value: string;
  modRevision: number;
}

export interface PrefixWatchHandlers {
  put(kv: PeerKv): void;
  delete(kv: PeerKv): void;
  /** The revision the peer's etcd is at (every watch response carries it): how far behind we are. */
  progress(revision: number): void;
  /** The watch stream dropped or came back; the client resumes it by itself. */
  link(up: boolean): void;
  /** The watch is over and will not resume (compaction, a dropped watch the client gave up on). */
  failed(err: Error): void;
}

export interface PeerWatch {
  /** Detaches every handler, then cancels; never hangs on a watch the server already dropped. */
  cancel(): Promise<void>;
}

export interface PeerSource {
  /** Every key under `prefix` as one consistent snapshot, and its revision. */
  list(prefix: string): Promise<{ kvs: PeerKv[]; revision: number }>;
  /** Changes under `prefix` from `fromRevision` on. */
  watch(prefix: string, fromRevision: number, handlers: PrefixWatchHandlers): Promise<PeerWatch>;
  get(key: string): Promise<string | null>;
  /** Puts of one key (no range: a peer may grant us that single key only). */
  watchKey(key: string, onPut: (value: string) => void): Promise<PeerWatch>;
  close(): void;
}
