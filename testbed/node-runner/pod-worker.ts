// One pod on this node, as the kubelet would run it: sandbox (netns + cgroup), containers as processes,
// restarts, readiness probes, status, and graceful termination ending with the final delete.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Container, V1ContainerStatus, V1PodCondition } from '@kubernetes/client-node';
import { isConflict, isNotFound, type KubeRest } from '../../mesh/kube/rest.js';
import { cgroupPids, destroyCgroup, ensureCgroup } from '../cgroup.js';
import { createPodNetwork, deletePodNetwork } from '../network.js';
import { podLinkName, podNetnsName } from '../topology.js';
import type { NodeRunnerConfig } from './config.js';
import { containerArgv } from './images.js';
import { containerEnv } from './pod-env.js';
import { runProbe } from './probe.js';
import { TOKEN_REFRESH_MS, withServiceAccountMount, writeServiceAccount } from './service-account.js';
import type { Pod } from '../../mesh/kube/objects.js';
import type { Wire } from '../../mesh/kube/objects.js';

export interface RunnerContext {
  cfg: NodeRunnerConfig;
  rest: KubeRest;
  log: (msg: string) => void;
  ips: IpAllocator;
}

export class IpAllocator {
  private readonly byUid = new Map<string, string>();
  constructor(private readonly prefix: string) {}
  reserve(uid: string, ip: string): void {
    this.byUid.set(uid, ip);
  }
  allocate(uid: string): string {
    const have = this.byUid.get(uid);
    if (have) return have;
    const used = new Set(this.byUid.values());
    for (let i = 2; i < 255; i++) {
      const ip = `${this.prefix}.${i}`;
      if (!used.has(ip)) {
        this.byUid.set(uid, ip);
        return ip;
      }
    }
    throw new Error(`no free pod IP left in ${this.prefix}.0/24`);
  }
  release(uid: string): void {
    this.byUid.delete(uid);
  }
}

interface ContainerRun {
  spec: V1Container;
  cgroup: string;
  child?: ChildProcess;
  state: 'waiting' | 'running' | 'terminated';
  reason?: string;
  message?: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode?: number;
  restarts: number;
  ready: boolean;
  probeStreak: number;
  timers: NodeJS.Timeout[];
}

const now = () => new Date().toISOString();

// As the kubelet names them (namespace_name_uid): a pod recreated under the same name starts a new log.
const containerLogFile = (logDir: string, pod: Pod, container: string) => join(logDir, `${pod.metadata?.namespace}_${pod.metadata?.name}_${pod.metadata?.uid}_${container}.log`);

export class PodWorker {
  readonly uid: string;
  private pod: Pod;
  private readonly netns: string;
  private readonly cgroup: string;
  private ip = '';
  private containers: ContainerRun[] = [];
  private phase: 'idle' | 'starting' | 'running' | 'terminating' | 'gone' = 'idle';
  private readonly transitions = new Map<string, { status: string; at: string }>();
  private statusDirty = false;
  private statusInFlight?: Promise<void>;
  private startTime?: string;
  private saTimer?: NodeJS.Timeout;

  constructor(
    private readonly ctx: RunnerContext,
    pod: Pod,
  ) {
    this.pod = pod;
    this.uid = pod.metadata!.uid!;
    this.netns = podNetnsName(ctx.cfg.tag, this.uid);
    this.cgroup = join(ctx.cfg.cgroup, `pod-${this.uid}`);
    // A pod this node already runs (runner restarted): keep its IP before any new pod is allocated one.
    const ip = pod.status?.podIP;
    if (ip && existsSync(`/run/netns/${this.netns}`)) {
      this.ip = ip;
      ctx.ips.reserve(this.uid, ip);
    }
  }

  get ref(): string {
    return `${this.pod.metadata?.namespace}/${this.pod.metadata?.name}`;
  }

  /** Where a container's output goes (the kubelet's log file), and whether the container still runs. */
  containerLog(name: string): { file: string; running: () => boolean } | undefined {
    if (!this.pod.spec?.containers.some((c) => c.name === name)) return undefined;
    return { file: containerLogFile(this.ctx.cfg.logDir, this.pod, name), running: () => this.containers.some((c) => c.spec.name === name && c.state === 'running') };
  }

  sync(pod: Pod): void {
    this.pod = pod;
    if (pod.metadata?.deletionTimestamp) {
      void this.terminate(true);
      return;
    }
    if (this.phase === 'idle' && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed') void this.start();
  }

  private async start(): Promise<void> {
    this.phase = 'starting';
    try {
      await Promise.resolve();
      const adopt = this.ip !== '';
      if (!adopt) {
        this.ip = this.ctx.ips.allocate(this.uid);
        await deletePodNetwork(this.netns);
        await createPodNetwork(this.ctx.cfg.node, { netns: this.netns, link: podLinkName(this.uid), ip: this.ip });
      }
      if (this.mountsServiceAccount) {
        await writeServiceAccount(this.ctx.rest, this.pod, this.saDir, this.ctx.cfg.caFile);
        this.saTimer = setInterval(() => {
          writeServiceAccount(this.ctx.rest, this.pod, this.saDir, this.ctx.cfg.caFile).catch((err: Error) => this.ctx.log(`${this.ref}: token refresh failed: ${err.message}`));
        }, TOKEN_REFRESH_MS);
        this.saTimer.unref();
      }
      this.startTime = this.pod.status?.startTime ?? now();
      ensureCgroup(this.cgroup);
      this.containers = (this.pod.spec?.containers ?? []).map((spec) => ({
        spec,
        cgroup: join(this.cgroup, spec.name),
        state: 'waiting',
        restarts: this.previousRestarts(spec.name),
        ready: false,
        probeStreak: 0,
        timers: [],
      }));
      if (this.phase !== 'starting') return;
      this.phase = 'running';
      for (const c of this.containers) {
        if (adopt && cgroupPids(c.cgroup).length > 0) {
          c.state = 'running';
          c.startedAt = this.previousStartedAt(c.spec.name) ?? now();
          this.watchAdopted(c);
        } else this.runContainer(c);
        this.scheduleProbe(c, (c.spec.readinessProbe?.initialDelaySeconds ?? 0) * 1000);
      }
      this.ctx.log(`${this.ref}: ${adopt ? 'adopted' : 'started'} at ${this.ip}`);
      this.markStatus();
    } catch (err) {
      this.ctx.log(`${this.ref}: sandbox failed: ${(err as Error).message}`);
      this.phase = 'idle';
      setTimeout(() => this.phase === 'idle' && !this.pod.metadata?.deletionTimestamp && void this.start(), 2_000).unref();
    }
  }

  private get mountsServiceAccount(): boolean {
    return this.pod.spec?.automountServiceAccountToken !== false;
  }

  private get saDir(): string {
    return join(this.ctx.cfg.podsDir, this.uid, 'serviceaccount');
  }

  private previousRestarts(name: string): number {
    return this.pod.status?.containerStatuses?.find((s) => s.name === name)?.restartCount ?? 0;
  }
  private previousStartedAt(name: string): string | undefined {
    return this.pod.status?.containerStatuses?.find((s) => s.name === name)?.state?.running?.startedAt;
  }

  private runContainer(c: ContainerRun): void {
    if (this.phase !== 'running') return;
    const argv = containerArgv(c.spec.image ?? '', c.spec.command, c.spec.args);
    if (!Array.isArray(argv)) {
      c.state = 'waiting';
      c.reason = 'ErrImagePull';
      c.message = argv.error;
      this.markStatus();
      return;
    }
    ensureCgroup(c.cgroup);
    const env = containerEnv(this.pod, c.spec, this.ip, this.ctx.cfg.node.nodeIp, this.ctx.cfg.apiserver, (m) => this.ctx.log(`${this.ref}: ${m}`));
    const mount = this.mountsServiceAccount ? withServiceAccountMount(this.saDir) : [];
    const logFd = openSync(containerLogFile(this.ctx.cfg.logDir, this.pod, c.spec.name), 'a');
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(c.cgroup, 'cgroup.procs'), ...mount, 'ip', 'netns', 'exec', this.netns, ...argv], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env,
    });
    closeSync(logFd);
    child.unref();
    c.child = child;
    c.state = 'running';
    c.startedAt = now();
    c.reason = undefined;
    c.message = undefined;
    child.on('exit', (code, signal) => this.onExit(c, code ?? 128 + (signal ? 15 : 0)));
    child.on('error', (err) => this.ctx.log(`${this.ref}/${c.spec.name}: ${err.message}`));
    this.markStatus();
  }

  /** After a runner restart the process is not our child: poll its cgroup to see it exit. */
  private watchAdopted(c: ContainerRun): void {
    const t = setInterval(() => {
      if (this.phase !== 'running') return clearInterval(t);
      if (!/^populated 1$/m.test(readFileSync(join(c.cgroup, 'cgroup.events'), 'utf8'))) {
        clearInterval(t);
        this.onExit(c, 137);
      }
    }, 500);
    c.timers.push(t);
  }

  private onExit(c: ContainerRun, code: number): void {
    c.child = undefined;
    c.state = 'terminated';
    c.exitCode = code;
    c.finishedAt = now();
    c.ready = false;
    this.markStatus();
    if (this.phase !== 'running') return;
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Never' || (policy === 'OnFailure' && code === 0)) return;
    const delay = Math.min(1000 * 2 ** c.restarts, 30_000);
    c.restarts += 1;
    this.ctx.log(`${this.ref}/${c.spec.name}: exited ${code}, restarting in ${delay} ms`);
    c.timers.push(setTimeout(() => this.runContainer(c), delay));
  }

  private scheduleProbe(c: ContainerRun, delayMs: number): void {
    c.timers.push(setTimeout(() => void this.probe(c), delayMs));
  }

  private async probe(c: ContainerRun): Promise<void> {
    if (this.phase !== 'running') return;
    const p = c.spec.readinessProbe;
    const ok = c.state === 'running' && (!p || (await runProbe(p, c.spec, this.ip, this.netns)));
    // The streak counts consecutive results of the same sign: positive successes, negative failures.
    c.probeStreak = ok ? Math.max(1, c.probeStreak + 1) : Math.min(-1, c.probeStreak - 1);
    const ready = ok ? c.probeStreak >= (p?.successThreshold ?? 1) : c.probeStreak > -(p?.failureThreshold ?? 3) && c.ready;
    if (ready !== c.ready && (c.state === 'running' || !ready)) {
      c.ready = ready;
      this.markStatus();
    }
    this.scheduleProbe(c, p ? (p.periodSeconds ?? 10) * 1000 : 1000);
  }

  private condition(type: string, ok: boolean): Wire<V1PodCondition> {
    const status = ok ? 'True' : 'False';
    const prev = this.transitions.get(type);
    if (!prev || prev.status !== status) this.transitions.set(type, { status, at: now() });
    return { type, status, lastTransitionTime: this.transitions.get(type)!.at };
  }

  private statusBody(): unknown {
    const allReady = this.containers.length > 0 && this.containers.every((c) => c.ready);
    const allRunning = this.containers.length > 0 && this.containers.every((c) => c.state === 'running');
    const statuses: Wire<V1ContainerStatus>[] = this.containers.map((c) => ({
      name: c.spec.name,
      image: c.spec.image ?? '',
      imageID: `skein-local://${c.spec.image}`,
      containerID: `skein://${this.uid}/${c.spec.name}`,
      ready: c.ready,
      started: c.state === 'running',
      restartCount: c.restarts,
      state:
        c.state === 'running'
          ? { running: { startedAt: c.startedAt } }
          : c.state === 'waiting'
            ? { waiting: { reason: c.reason ?? 'ContainerCreating', message: c.message } }
            : { terminated: { exitCode: c.exitCode ?? 0, reason: c.exitCode === 0 ? 'Completed' : 'Error', startedAt: c.startedAt, finishedAt: c.finishedAt } },
    }));
    return {
      status: {
        phase: allRunning || this.containers.some((c) => c.state === 'running' || c.restarts > 0) ? 'Running' : 'Pending',
        podIP: this.ip,
        podIPs: [{ ip: this.ip }],
        hostIP: this.ctx.cfg.node.nodeIp,
        hostIPs: [{ ip: this.ctx.cfg.node.nodeIp }],
        startTime: this.startTime,
        conditions: [
          this.condition('PodReadyToStartContainers', true),
          this.condition('Initialized', true),
          this.condition('ContainersReady', allReady),
          this.condition('Ready', allReady),
        ],
        containerStatuses: statuses,
      },
    };
  }

  /** Coalesces status writes: at most one in flight, the latest state always written last. */
  private markStatus(): void {
    this.statusDirty = true;
    if (this.statusInFlight) return;
    this.statusInFlight = (async () => {
      while (this.statusDirty && this.phase !== 'gone') {
        this.statusDirty = false;
        const { namespace, name } = this.pod.metadata!;
        try {
          await this.ctx.rest.patch(`/api/v1/namespaces/${namespace}/pods/${name}/status`, this.statusBody(), 'strategic');
        } catch (err) {
          if (isNotFound(err)) break;
          this.ctx.log(`${this.ref}: status update failed: ${(err as Error).message}`);
          this.statusDirty = true;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      this.statusInFlight = undefined;
    })();
  }

  /** Graceful stop: SIGTERM, the pod's grace period (capped at 30 s), SIGKILL, sandbox removal. */
  async terminate(deleteFromApi: boolean): Promise<void> {
    if (this.phase === 'terminating' || this.phase === 'gone') return;
    const wasStarting = this.phase === 'starting';
    this.phase = 'terminating';
    for (const c of this.containers) c.timers.forEach((t) => clearTimeout(t));
    if (wasStarting) await new Promise((r) => setTimeout(r, 100));
    const graceMs = Math.min(this.pod.metadata?.deletionGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30, 30) * 1000;
    for (const pid of cgroupPids(this.cgroup)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
    const deadline = Date.now() + graceMs;
    while (cgroupPids(this.cgroup).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (this.saTimer) clearInterval(this.saTimer);
    await destroyCgroup(this.cgroup);
    await deletePodNetwork(this.netns);
    rmSync(join(this.ctx.cfg.podsDir, this.uid), { recursive: true, force: true });
    this.ctx.ips.release(this.uid);
    this.phase = 'gone';
    this.ctx.log(`${this.ref}: stopped`);
    if (!deleteFromApi) return;
    const { namespace, name } = this.pod.metadata!;
    try {
      await this.ctx.rest.delete(`/api/v1/namespaces/${namespace}/pods/${name}`, { gracePeriodSeconds: 0, preconditions: { uid: this.uid } });
    } catch (err) {
      if (!isNotFound(err) && !isConflict(err)) this.ctx.log(`${this.ref}: final delete failed: ${(err as Error).message}`);
    }
  }
}
