import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';
import { IMAGE_REGISTRY, IMAGES, SKEIN_VERSION } from './version.js';

const read = (rel: string) => readFileSync(new URL(rel, import.meta.url), 'utf8');

describe('the version and the images it deploys', () => {
  it('is package.json\'s version, the Helm chart\'s and what build.sh tags', () => {
    expect(z.object({ version: z.string() }).parse(JSON.parse(read('../package.json'))).version).toBe(SKEIN_VERSION);
    const chart = z.object({ version: z.string(), appVersion: z.string() }).parse(parse(read('helm/skein/Chart.yaml')));
    expect(chart).toMatchObject({ version: SKEIN_VERSION, appVersion: SKEIN_VERSION });
    // build.sh tags <registry>/<name>:<package.json version>.
    expect(read('images/build.sh')).toContain(`REGISTRY="\${SKEIN_IMAGE_REGISTRY:-${IMAGE_REGISTRY}}"`);
    for (const name of ['skein', 'skein-echo', 'skein-client', 'skein-etcd']) expect(read('images/build.sh')).toMatch(new RegExp(`^write_image ${name} `, 'm'));
    expect(Object.values(IMAGES).map((i) => i.ref).sort()).toEqual(['skein', 'skein-client', 'skein-echo', 'skein-etcd', 'skein-pause'].map((n) => `${IMAGE_REGISTRY}/${n}:${SKEIN_VERSION}`).sort());
  });

  it('is what the chart deploys by default', () => {
    const values = z.object({ image: z.object({ repository: z.string() }), meshEtcd: z.object({ image: z.object({ repository: z.string() }) }) }).parse(parse(read('helm/skein/values.yaml')));
    expect(`${values.image.repository}:${SKEIN_VERSION}`).toBe(IMAGES.skein.ref);
    expect(`${values.meshEtcd.image.repository}:${SKEIN_VERSION}`).toBe(IMAGES.etcd.ref);
  });
});
