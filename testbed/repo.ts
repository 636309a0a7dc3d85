// Where the repository and its compiled output are, from source (vitest) or from dist/ alike: processes the
// test bed spawns always run the compiled JavaScript.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the skein repository root (no package.json above this module)');
    dir = up;
  }
  return dir;
}

export const REPO_ROOT = findRoot();
export const distPath = (...rel: string[]) => join(REPO_ROOT, 'dist', ...rel);
