// The process at the other end of a Workload API connection, held by a pidfd from the moment the connection
// is accepted. A pid number alone is not a process: once the connector exits, the kernel may give its pid to
// a process of another pod while the connection lives on (inherited by a child). A pidfd always names the
// process that connected; reads about it (its cgroup) count only if it was alive before and after them.
import { closeSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { sourceDir } from '../source-dir.js';

interface Native {
  peerProcess(fd: number, how?: 'auto' | 'pidfd_open'): { pid: number; uid: number; gid: number; pidfd: number; via: 'SO_PEERPIDFD' | 'pidfd_open' };
  pidfdAlive(pidfd: number): boolean;
}

const native = createRequire(import.meta.url)(join(sourceDir(import.meta.url), '..', 'build', 'peer_cred.node')) as Native;

export class PeerProcess {
  private closed = false;

  private constructor(
    /** The connector's pid when it connected: for messages only, it may name another process by now. */
    readonly pidAtConnect: number,
    readonly uid: number,
    readonly gid: number,
    private readonly pidfd: number,
    /** How the pidfd was had: SO_PEERPIDFD (exact), or pidfd_open of the peer's pid (the fallback). */
    readonly via: 'SO_PEERPIDFD' | 'pidfd_open',
  ) {}

  /** The process that connected on the socket fd `fd`; throws if it cannot be pinned down. */
  static ofSocket(fd: number, how: 'auto' | 'pidfd_open' = 'auto'): PeerProcess {
    const p = native.peerProcess(fd, how);
    return new PeerProcess(p.pid, p.uid, p.gid, p.pidfd, p.via);
  }

  /** False once the connector has exited (a zombie included): from then on its pid may be reused. */
  alive(): boolean {
    return !this.closed && native.pidfdAlive(this.pidfd);
  }

  /** The connector's pid in this pid namespace now; undefined once it is reaped or not visible here. */
  currentPid(): number | undefined {
    if (this.closed) return undefined;
    const m = /^Pid:\s*(-?\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${this.pidfd}`, 'utf8'));
    const pid = m ? Number(m[1]) : -1;
    return pid > 0 ? pid : undefined;
  }

  /**
   * `read(pid)` with the connector's current pid, and its result only if the connector was alive from before
   * the read to after it (so the pid named the connector throughout); undefined once it has exited.
   */
  readWhileAlive<T>(read: (pid: number) => T): T | undefined {
    const pid = this.alive() ? this.currentPid() : undefined;
    if (pid === undefined) return undefined;
    const value = read(pid);
    return this.alive() && this.currentPid() === pid ? value : undefined;
  }

  /** Closes the pidfd (once: a second close could hit an fd number reused by something else). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.pidfd);
  }
}
