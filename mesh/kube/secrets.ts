// Secrets in skein-system as the string maps the mtls/ and sync/ code works with.
import type { SecretStore } from '../../mtls/cluster-ca.js';
import { SKEIN_NAMESPACE } from '../service-ref.js';
import { isConflict, isNotFound, type KubeRest } from './rest.js';

interface Secret {
  metadata?: { name?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

/** Secret data (base64) as strings. */
export const decodeSecretData = (data: Record<string, string> = {}) => Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
const encode = (data: Record<string, string>) => Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));

export class KubeSecrets implements SecretStore {
  constructor(
    private readonly rest: KubeRest,
    readonly namespace = SKEIN_NAMESPACE,
  ) {}

  private path(name = ''): string {
    return `/api/v1/namespaces/${this.namespace}/secrets${name ? `/${name}` : ''}`;
  }

  async get(name: string): Promise<Record<string, string> | undefined> {
    try {
      return decodeSecretData((await this.rest.get<Secret>(this.path(name))).data);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async create(name: string, data: Record<string, string>, labels: Record<string, string> = {}): Promise<boolean> {
    try {
      await this.rest.post(this.path(), { metadata: { name, namespace: this.namespace, labels }, type: 'Opaque', data: encode(data) });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  async put(name: string, data: Record<string, string>, labels: Record<string, string> = {}): Promise<void> {
    if (await this.create(name, data, labels)) return;
    await this.rest.put(this.path(name), { metadata: { name, namespace: this.namespace, labels }, type: 'Opaque', data: encode(data) });
  }

  async delete(name: string): Promise<boolean> {
    try {
      await this.rest.delete(this.path(name));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async list(labelSelector: string): Promise<{ name: string; data: Record<string, string> }[]> {
    const res = await this.rest.get<{ items: Secret[] }>(`${this.path()}?labelSelector=${encodeURIComponent(labelSelector)}`);
    return res.items.map((s) => ({ name: s.metadata!.name!, data: decodeSecretData(s.data) }));
  }
}
