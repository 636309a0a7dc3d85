// Watches on the mesh etcd that can always be cancelled safely. etcd3 (1.1.2) forgets a watch the server
// cancelled (a start revision lost to compaction) but keeps its id; cancelling it afterwards sends a cancel
// the server answers for an id the client no longer knows, and etcd3 throws that from inside its stream
// handler ("Failed to find watcher for IWatchResponse"): an uncaught exception that kills the process. So a
// watch the server already cancelled is never cancelled again, and a cancel that gets no answer is not
// waited on.
import { waitAtMost } from './wait-at-most.js';
import type { Etcd3, Watcher } from 'etcd3';

export interface MeshWatch {
  readonly watcher: Watcher;
  /** Detaches every listener and cancels the watch if the server has not already; never throws, never hangs. */
  cancel(): Promise<void>;
}

const CANCEL_WAIT_MS = 1_000;

export async function openWatch(client: Etcd3, target: { prefix: string } | { key: string }, fromRevision?: number): Promise<MeshWatch> {
  let builder = 'prefix' in target ? client.watch().prefix(target.prefix) : client.watch().key(target.key);
  if (fromRevision !== undefined) builder = builder.startRevision(String(fromRevision));
  const watcher = await builder.create();
  let cancelledByServer = false;
  // Registered before any caller's listener, so the flag is set by the time their handler may cancel.
  watcher.on('error', () => (cancelledByServer = true));
  let cancelling: Promise<void> | undefined;
  return {
    watcher,
    cancel: () =>
      (cancelling ??= (async () => {
        watcher.removeAllListeners();
        // An EventEmitter without an 'error' listener throws: a late error of a cancelled watch must not.
        watcher.on('error', () => {});
        if (cancelledByServer) return;
        await waitAtMost(watcher.cancel(), CANCEL_WAIT_MS);
      })()),
  };
}
