// The images the test bed can run: Skein's own components, echo and client, as Node processes (the same code the
// container images for kind are built from). Matched by the repository's last path segment, any registry/tag.
import { distPath } from '../repo.js';

const imagesDir = distPath('deploy', 'images');

const BUILTIN_IMAGES: Record<string, string> = {
  'skein-echo': `${imagesDir}/echo.js`,
  'skein-client': `${imagesDir}/client.js`,
  'skein-apiserver': distPath('apiserver', 'main.js'),
};

export function imageRepository(image: string): string {
  const noDigest = image.split('@')[0] ?? image;
  const last = noDigest.split('/').pop() ?? noDigest;
  return last.split(':')[0] ?? last;
}

/** The argv for a container, or an error message naming the image and what is supported. */
export function containerArgv(image: string, command: string[] = [], args: string[] = []): string[] | { error: string } {
  const script = BUILTIN_IMAGES[imageRepository(image)];
  if (!script) {
    return { error: `image "${image}" cannot run on the skein local test bed: it runs only ${Object.keys(BUILTIN_IMAGES).join(', ')} (any registry and tag)` };
  }
  // Like a container runtime: `command` replaces the entrypoint's arguments only for these Node images.
  return [process.execPath, script, ...command, ...args];
}
