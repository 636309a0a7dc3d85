// A Kubernetes informer that keeps going. client-node 1.x's ListWatch relists on 410 but stops for good on
// any other watch error (node-fetch's 30 s timeout, ECONNRESET, an apiserver restart), so we restart it with
// capped, jittered backoff; it resumes from its last resourceVersion and relists only when that expired.
import { ListWatch, Watch, type KubeConfig, type KubernetesObject, type KubernetesListObject } from '@kubernetes/client-node';
import type { KubeList, KubeObject } from './objects.js';
import { backoffDelay } from '../backoff.js';

/** T is an object as it arrives on the wire (mesh/kube/objects.ts): timestamps are strings. */
export interface InformerOptions<T extends KubeObject> {
  kc: KubeConfig;
  path: string;
  list: () => Promise<KubeList<T>>;
  labelSelector?: string;
  fieldSelector?: string;
  onEvent: (type: 'add' | 'update' | 'delete', obj: T) => void;
  onRestart?: (err: unknown, attempt: number) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface RunningInformer<T extends KubeObject> {
  /** Resolves once the first list has been delivered. */
  readonly synced: Promise<void>;
  list(): readonly T[];
  stop(): Promise<void>;
  readonly restarts: number;
}

export function startInformer<T extends KubeObject>(opts: InformerOptions<T>): RunningInformer<T> {
  // ListWatch is typed with client-node's models (Date timestamps) but passes on parsed JSON, where they are
  // strings: the one place the two descriptions of the same objects meet.
  const list = opts.list as unknown as () => Promise<KubernetesListObject<KubernetesObject>>;
  const lw = new ListWatch<KubernetesObject>(opts.path, new Watch(opts.kc), list, false, opts.labelSelector, opts.fieldSelector);
  const asWire = (o: KubernetesObject) => o as unknown as T;
  const minBackoff = opts.minBackoffMs ?? 200;
  const maxBackoff = opts.maxBackoffMs ?? 5_000;
  let stopped = false;
  let attempt = 0;
  let restarts = 0;
  let timer: NodeJS.Timeout | undefined;
  let markSynced!: () => void;
  const synced = new Promise<void>((resolve) => (markSynced = resolve));

  lw.on('add', (o) => opts.onEvent('add', asWire(o)));
  lw.on('update', (o) => opts.onEvent('update', asWire(o)));
  lw.on('delete', (o) => opts.onEvent('delete', asWire(o)));
  lw.on('error', (err) => {
    if (stopped) return;
    attempt += 1;
    restarts += 1;
    opts.onRestart?.(err, attempt);
    timer = setTimeout(() => void begin(), backoffDelay(attempt - 1, { minMs: minBackoff, maxMs: maxBackoff, jitter: 0.5 }));
  });

  async function begin(): Promise<void> {
    if (stopped) return;
    try {
      await lw.start();
    } catch (err) {
      // start() reports through the error callback; a throw here is a bug in the listFn's promise chain.
      opts.onRestart?.(err, attempt);
    }
    if (lw.latestResourceVersion() !== '') {
      attempt = 0;
      markSynced();
    }
  }
  void begin();

  return {
    synced,
    list: () => lw.list().map(asWire),
    get restarts() {
      return restarts;
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await lw.stop();
    },
  };
}
