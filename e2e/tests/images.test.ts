// The container images (deploy/images/build.sh) on a real container runtime: built twice to the same
// digests, checked by crane, imported into a throwaway containerd (its own root, state, socket, runc root
// and FIFOs under a temp dir) and run with runc: the skein image's CLI, apiserver, agent and native addons
// as the non-root user, the mesh etcd image, and the echo image answering the client image inside a network
// namespace this test creates. Everything (containers, containerd, its shims, mounts, the netns) is removed
// afterwards, also when a test fails.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../testbed/repo.js';
import { IMAGES, SKEIN_VERSION } from '../../deploy/version.js';
import { parseOutcome } from '../../deploy/images/outcome.js';

interface Built { archive: string; ref: string; digest: string; bytes: number }

function build(out: string, env: NodeJS.ProcessEnv = {}): Map<string, Built> {
  const text = execFileSync('bash', ['deploy/images/build.sh', '--out', out], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = text.trim().split('\n').map((l) => l.split(' '));
  return new Map(lines.map(([archive, ref, digest, bytes]) => [ref!, { archive: archive!, ref: ref!, digest: digest!, bytes: Number(bytes) }]));
}

/** A containerd of its own: nothing of it outlives close(), whatever state the test left it in. */
class Containerd {
  readonly dir = mkdtempSync(join(tmpdir(), 'skein-ctd-'));
  readonly ns = `skein-e2e-${randomBytes(3).toString('hex')}`;
  private proc?: ChildProcess;
  private readonly sock = join(this.dir, 'containerd.sock');

  async start(): Promise<void> {
    const config = join(this.dir, 'config.toml');
    writeFileSync(
      config,
      [
        'version = 2',
        `root = "${this.dir}/root"`,
        `state = "${this.dir}/state"`,
        // No Kubernetes here: the CRI plugin would only start a CNI watcher.
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        `[grpc]\n  address = "${this.sock}"`,
        `[ttrpc]\n  address = "${this.sock}.ttrpc"`,
        '[debug]\n  address = ""',
        '[metrics]\n  address = ""',
      ].join('\n'),
    );
    this.proc = spawn('containerd', ['--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    this.proc.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    for (let i = 0; i < 100 && !existsSync(this.sock); i++) await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(this.sock)) throw new Error(`containerd did not start:\n${log}`);
  }

  ctr(args: string[], timeout = 60_000): string {
    return execFileSync('ctr', ['--address', this.sock, '--namespace', this.ns, ...args], { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** ctr run with this containerd's own runc root and FIFO directory. */
  run(opts: string[], ref: string, id: string, argv: string[], timeout = 60_000): string {
    return this.ctr(['run', '--runc-root', join(this.dir, 'runc'), '--fifo-dir', join(this.dir, 'fifo'), ...opts, ref, id, ...argv], timeout);
  }

  async close(): Promise<void> {
    // Tasks first (kill, then delete with their containers), so the shims exit and unmount the rootfs.
    for (const id of this.list(['containers', 'list', '-q'])) {
      try { this.ctr(['tasks', 'kill', '--signal', 'SIGKILL', id], 10_000); } catch { /* no running task */ }
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const id of this.list(['containers', 'list', '-q'])) {
      try { this.ctr(['tasks', 'delete', '--force', id], 10_000); } catch { /* no task */ }
      try { this.ctr(['containers', 'delete', id], 10_000); } catch { /* already gone */ }
    }
    this.proc?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    this.proc?.kill('SIGKILL');
    // Shims our containerd started (they carry its socket in their argv) and mounts below our dir.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.sock)) process.kill(Number(pid), 'SIGKILL');
      } catch { /* exited meanwhile */ }
    }
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(this.dir));
    for (const m of mounts.sort().reverse()) {
      try { execFileSync('umount', ['-l', m]); } catch { /* gone */ }
    }
    rmSync(this.dir, { recursive: true, force: true });
    // The shims' socket directory is fixed; removed only when empty (nobody else's shim uses it).
    for (const d of ['/run/containerd/s', '/run/containerd']) {
      try { rmdirSync(d); } catch { /* in use or absent */ }
    }
  }

  private list(args: string[]): string[] {
    try { return this.ctr(args, 10_000).split('\n').filter(Boolean); } catch { return []; }
  }
}

describe('container images', () => {
  const out = mkdtempSync(join(tmpdir(), 'skein-images-'));
  const netns = `skein-img-${randomBytes(3).toString('hex')}`;
  const ctd = new Containerd();
  let first: Map<string, Built>;
  let second: Map<string, Built>;

  beforeAll(async () => {
    first = build(join(out, 'a'));
    // Compressed again from scratch: gzip's output is part of what must not change.
    second = build(join(out, 'b'), { SKEIN_IMAGES_FRESH_LAYERS: '1' });
    await ctd.start();
    execFileSync('ip', ['netns', 'add', netns]);
    execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  });

  afterAll(async () => {
    await ctd.close();
    try { execFileSync('ip', ['netns', 'delete', netns], { stdio: 'ignore' }); } catch { /* never created */ }
    rmSync(out, { recursive: true, force: true });
  });

  it('builds the same bytes twice, tagged with this version', () => {
    expect([...first.keys()].sort()).toEqual(Object.values(IMAGES).map((i) => i.ref).sort());
    for (const [ref, a] of first) {
      const b = second.get(ref)!;
      expect(b.digest, ref).toBe(a.digest);
      expect(readFileSync(b.archive).equals(readFileSync(a.archive)), `${ref}: archives differ`).toBe(true);
    }
    console.log([...first.values()].map((i) => `${i.ref}: ${(i.bytes / 1e6).toFixed(1)} MB compressed, archive ${(statSync(i.archive).size / 1e6).toFixed(1)} MB`).join('\n'));
  });

  it('writes archives crane validates', () => {
    const crane = execFileSync('bash', ['deploy/scripts/build-tools.sh', 'crane'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    for (const i of first.values()) expect(execFileSync(crane, ['validate', '--tarball', i.archive], { encoding: 'utf8' })).toContain('PASS');
  });

  it('imports into containerd under their references', () => {
    for (const i of first.values()) ctd.ctr(['images', 'import', i.archive], 120_000);
    const listed = ctd.ctr(['images', 'list', '-q']).split('\n').filter(Boolean);
    expect(listed.sort()).toEqual([...first.keys()].sort());
  });

  it('runs the CLI, the apiserver, the agent and the native addons as the non-root user', () => {
    const node = ['/usr/local/bin/node'];
    const version = ctd.run(['--rm'], IMAGES.skein.ref, 'skein-version', [...node, '/opt/skein/dist/deploy/cli/skein.js', 'version']);
    expect(version).toContain(`skein ${SKEIN_VERSION}`);
    for (const i of Object.values(IMAGES)) expect(version).toContain(i.ref);
    // Each entry point loads all its modules and refuses a start without its flags, naming the flag.
    const fails = (id: string, script: string) => {
      try {
        ctd.run(['--rm'], IMAGES.skein.ref, id, [...node, script]);
      } catch (err) {
        return String((err as { stderr?: string; stdout?: string }).stdout ?? '') + String((err as { stderr?: string }).stderr ?? '');
      }
      throw new Error(`${script} started without its flags`);
    };
    expect(fails('skein-apiserver', '/opt/skein/dist/apiserver/main.js')).toContain('--cluster-name is required');
    expect(fails('skein-agent', '/opt/skein/dist/datapath/agent/main.js')).toMatch(/skein-agent: .*clusterName/);
    // libbpf and its libraries come from the image's Debian packages, not from this host.
    const addons = ctd.run(['--rm'], IMAGES.skein.ref, 'skein-addons', [...node, '-e', "require('/opt/skein/datapath/build/skein_bpf.node'); require('/opt/skein/mtls/build/peer_cred.node'); console.log('uid', process.getuid(), process.version)"]);
    expect(addons.trim()).toBe('uid 65532 v20.20.2');
    // The dashboard skein-apiserver serves and the chart `skein drill --html` inlines come from the image's dist/ui.
    const ui = ctd.run(['--rm'], IMAGES.skein.ref, 'skein-ui', [...node, '--input-type=module', '-e', "const { inlineUiBundle } = await import('/opt/skein/dist/mesh/ui-bundle.js'); console.log(['dashboard', 'drill-report'].map((b) => inlineUiBundle(b)).map((u) => u.js.length > 1000 && u.css.length > 0).join())"]);
    expect(ui.trim()).toBe('true,true');
    expect(ctd.run(['--rm'], IMAGES.etcd.ref, 'skein-etcd', ['/usr/bin/etcd', '--version'])).toMatch(/etcd Version: 3\.4\.23/);
  });

  it('serves echo to the client inside a network namespace', async () => {
    const inNetns = ['--with-ns', `network:/run/netns/${netns}`];
    ctd.run(['-d', ...inNetns, '--env', 'CLUSTER_NAME=images-e2e', '--env', 'POD_NAME=echo-0'], IMAGES.echo.ref, 'echo', []);
    let lines: string[] = [];
    for (let i = 0; i < 50; i++) {
      const text = ctd.run(['--rm', ...inNetns], IMAGES.client.ref, `client-${i}`, ['/usr/local/bin/node', '/opt/skein/dist/deploy/images/client.js', 'http', '127.0.0.1:8080', '--count', '3', '--interval-ms', '10']);
      lines = text.trim().split('\n');
      if (lines.every((l) => parseOutcome(l)?.ok)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const outcomes = lines.map((l) => parseOutcome(l));
    expect(outcomes).toHaveLength(3);
    expect(outcomes.every((o) => o?.ok && o.cluster === 'images-e2e' && o.pod === 'echo-0')).toBe(true);
  });
});
