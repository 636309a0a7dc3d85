// The pinned Kubernetes binaries, built once by deploy/scripts/build-kube.sh and cached by version.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from './repo.js';

export const KUBE_VERSION = process.env.SKEIN_KUBE_VERSION ?? 'v1.36.3';
const BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kubelet', 'kube-proxy'];

function kubeBinDir(): string {
  const cache = process.env.SKEIN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'skein');
  return join(cache, 'kube', KUBE_VERSION, 'bin');
}

export async function ensureKubeBinaries(progress: (msg: string) => void): Promise<string> {
  const dir = kubeBinDir();
  if (BINARIES.every((b) => existsSync(join(dir, b)))) return dir;
  progress(`building Kubernetes ${KUBE_VERSION} from its Go module (first run only; cached in ${dir})`);
  await new Promise<void>((resolve, reject) => {
    const child = spawn('bash', [join(REPO_ROOT, 'deploy', 'scripts', 'build-kube.sh')], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, SKEIN_KUBE_VERSION: KUBE_VERSION } });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`deploy/scripts/build-kube.sh exited ${code}: see the output above`))));
    child.on('error', reject);
  });
  return dir;
}
