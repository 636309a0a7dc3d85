// The images of real-kubelet nodes: build.sh's archives imported ONCE into a containerd root (the image
// store), cached by the images' digests and containerd's version, and copied into every node's containerd
// root before it starts. Importing is the slow part of a node (gunzip and unpack of every layer, ~8 s per
// node here, all nodes at once on 2 cores); a copy is hard links for the read-only parts (content blobs,
// unpacked layers, which containerd never writes) and real copies of the two bolt databases it writes.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { destroyCgroup } from './cgroup.js';
import { spawnDaemon, waitFor } from './daemon.js';
import { containerdToml } from './containerd.js';
import { REPO_ROOT } from './repo.js';
import { run, runQuiet } from './run.js';

interface BuiltImage {
  archive: string;
  ref: string;
  digest: string;
}

export interface Images {
  images: BuiltImage[];
  /** build.sh's skein-pause: what every containerd runs as sandbox. */
  sandboxImage: string;
  /** A containerd root holding every image, unpacked (seedContainerdRoot copies it). */
  store: string;
}

/** build.sh's archives (a cached rebuild takes seconds). */
async function buildImages(progress: (msg: string) => void): Promise<{ images: BuiltImage[]; sandboxImage: string }> {
  progress('building the images (deploy/images/build.sh)');
  const out = await run('bash', [join(REPO_ROOT, 'deploy', 'images', 'build.sh')], { timeoutMs: 600_000 });
  // One line per image: <archive> <reference> <digest> <bytes>.
  const images = out
    .trim()
    .split('\n')
    .map((l) => l.split(' '))
    .map(([archive, ref, digest]) => ({ archive: archive!, ref: ref ?? '', digest: digest ?? '' }));
  const sandboxImage = images.find((i) => i.ref.includes('/skein-pause:'))?.ref;
  if (!sandboxImage || images.some((i) => !i.digest.startsWith('sha256:'))) throw new Error(`deploy/images/build.sh printed no skein-pause image or a line without a digest: ${out.trim()}`);
  return { images, sandboxImage };
}

const storesDir = () => join(process.env.SKEIN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'skein'), 'containerd-images');

/**
 * The images built and imported into the cached image store (made on the first `up` after they change).
 * The import runs in `cgroup` (killed by `down` if `up` dies half way), its state below `runDir`.
 */
export async function prepareImages(o: { cgroup: string; runDir: string; logFile: string; progress: (msg: string) => void }): Promise<Images> {
  const built = await buildImages(o.progress);
  const version = (await run('containerd', ['--version'])).trim();
  const key = createHash('sha256')
    .update([version, ...built.images.map((i) => `${i.ref}@${i.digest}`)].join('\n'))
    .digest('hex')
    .slice(0, 16);
  const store = join(storesDir(), key);
  if (!existsSync(store)) await importStore({ ...o, ...built, store });
  return { ...built, store };
}

async function importStore(o: { images: BuiltImage[]; sandboxImage: string; store: string; cgroup: string; runDir: string; logFile: string; progress: (msg: string) => void }): Promise<void> {
  o.progress(`importing ${o.images.length} images into the image store (once per image set)`);
  // Made beside the final path and renamed into place, so a half-made store is never used.
  const tmp = join(storesDir(), `.tmp-${process.pid}-${Date.now()}`);
  const sock = join(o.runDir, 'containerd.sock');
  mkdirSync(tmp, { recursive: true });
  mkdirSync(o.runDir, { recursive: true });
  const config = join(tmp, 'containerd.toml');
  writeFileSync(config, containerdToml({ root: join(tmp, 'root'), state: join(o.runDir, 'state'), sock, opt: join(tmp, 'opt'), runcRoot: join(o.runDir, 'runc'), cniConfDir: join(tmp, 'cni') }, o.sandboxImage));
  const pid = spawnDaemon({ cgroup: o.cgroup, logFile: o.logFile, argv: ['containerd', '--config', config] });
  try {
    await waitFor('the image store containerd', async () => ((await runQuiet('ctr', ['--address', sock, 'version'])) ? true : undefined), 30_000, `see ${o.logFile}`);
    await Promise.all(o.images.map((i) => run('ctr', ['--address', sock, '--namespace', 'k8s.io', 'images', 'import', i.archive], { timeoutMs: 300_000 })));
    // A clean stop, so its databases are closed.
    process.kill(pid, 'SIGTERM');
    await waitFor('the image store containerd to stop', async () => (running(pid) ? undefined : true), 20_000);
  } finally {
    await destroyCgroup(o.cgroup);
  }
  rmSync(o.runDir, { recursive: true, force: true });
  for (const old of readdirSync(storesDir())) {
    const dir = join(storesDir(), old);
    // Older image sets (node roots copied from them keep their own links), and temp dirs of crashed runs.
    if (!old.startsWith('.tmp-') || Date.now() - statSync(dir).mtimeMs > 3_600_000) rmSync(dir, { recursive: true, force: true });
  }
  try {
    renameSync(join(tmp, 'root'), o.store);
  } catch {
    /* another `up` made the same store meanwhile: use that one */
  }
  rmSync(tmp, { recursive: true, force: true });
}

/** Alive and not a zombie (the shell spawnDaemon starts execs containerd: same pid). */
function running(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
