// Applies the YAML manifests shipped in deploy/manifests (the same files kind users apply with kubectl).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KubernetesObjectApi, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import YAML from 'yaml';
import { REPO_ROOT } from './repo.js';

export function loadManifest(file: string, vars: Record<string, string> = {}): KubernetesObject[] {
  let text = readFileSync(join(REPO_ROOT, 'deploy', 'manifests', file), 'utf8');
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`\${${k}}`, v);
  return YAML.parseAllDocuments(text)
    .map((d) => d.toJSON() as KubernetesObject | null)
    .filter((o): o is KubernetesObject => !!o);
}

export async function applyManifest(kc: KubeConfig, objects: KubernetesObject[]): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (const obj of objects) {
    try {
      await api.create(obj);
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
      await api.patch(obj, undefined, undefined, 'skein', true, 'application/apply-patch+yaml');
    }
  }
}
