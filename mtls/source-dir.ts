// Files that tsc does not copy to dist/ (.proto files, natively built addons) stay in the source tree; a
// module compiled to dist/<part>/... finds them at <part>/... next to its source.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export function sourceDir(moduleUrl: string): string {
  const dir = dirname(fileURLToPath(moduleUrl));
  return dir.includes('/dist/') ? dir.replace('/dist/', '/') : dir;
}
