// The export's last mesh etcd error, shown in /v1/status until a heartbeat gets through again, and the
// etcd error counter beside it.
import type { Metrics } from '../metrics.js';

export class EtcdHealth {
  lastError?: string;

  constructor(private readonly errors: Metrics['etcdErrors']) {}

  /** A failed etcd call: counted and shown. */
  failed(err: unknown): void {
    this.note(err);
    this.errors.inc();
  }

  /** Shown, not counted (the StateWriter counts its own failures; a lost lease is not a failed call). */
  note(err: unknown): void {
    this.lastError = (err as Error)?.message ?? String(err);
  }

  ok(): void {
    this.lastError = undefined;
  }
}
