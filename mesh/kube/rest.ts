// Plain JSON requests to the Kubernetes API, authenticated exactly as client-node's KubeConfig says (certs,
// tokens, exec plugins). Used where the generated 1.x client is awkward (merge patches, subresources) and
// so list and watch objects share one raw shape.
import { Agent as HttpsAgent, request, type RequestOptions } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubeList, KubeObject, Wire } from './objects.js';

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export type PatchType = 'merge' | 'strategic' | 'json';
const PATCH_TYPES: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  json: 'application/json-patch+json',
};

/** Auth headers are re-read this often, so rotated service-account token files take effect. */
const AUTH_REFRESH_MS = 60_000;

export class KubeRest {
  private auth?: { at: number; agent: unknown; headers: Record<string, string> };

  constructor(readonly kc: KubeConfig) {}

  get server(): string {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster: pass --context or set current-context');
    return cluster.server;
  }

  /** TLS material and auth headers from the kubeconfig; one keep-alive agent reused for every request. */
  private async authOptions(): Promise<{ agent: unknown; headers: Record<string, string> }> {
    if (this.auth && Date.now() - this.auth.at < AUTH_REFRESH_MS) return this.auth;
    const opts: Pick<RequestOptions, 'agent' | 'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'rejectUnauthorized' | 'servername'> & { headers?: Record<string, unknown>; auth?: string } = {};
    await this.kc.applyToHTTPSOptions(opts);
    const headers = Object.fromEntries(Object.entries(opts.headers ?? {}).map(([k, v]) => [k, String(v)]));
    if (opts.auth) headers.Authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    this.auth = { at: Date.now(), agent: this.auth?.agent ?? this.keepAliveAgent(opts), headers };
    return this.auth;
  }

  /**
   * client-node's agent closes each connection after one request: a TCP and TLS handshake (and the API
   * server's authentication of the client certificate) per request. Ours keeps them for the next one, the
   * same TLS material; a proxy or plain-HTTP server keeps client-node's agent.
   */
  private keepAliveAgent(opts: Pick<RequestOptions, 'agent' | 'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'rejectUnauthorized' | 'servername'>): unknown {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster?.server.startsWith('https:') || cluster.proxyUrl) return opts.agent;
    const { ca, cert, key, pfx, passphrase, rejectUnauthorized, servername } = opts;
    // Only what the kubeconfig set: an option present but undefined must never stand in for a default.
    const tls = Object.fromEntries(Object.entries({ ca, cert, key, pfx, passphrase, rejectUnauthorized, servername }).filter(([, v]) => v !== undefined));
    return new HttpsAgent({ ...tls, keepAlive: true });
  }

  async request<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<Wire<T>> {
    const { agent, headers } = await this.authOptions();
    const url = new URL(this.server + path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const send = url.protocol === 'https:' ? request : httpRequest;
    return new Promise<Wire<T>>((resolve, reject) => {
      const req = send(
        url,
        {
          method,
          agent: agent as never,
          // Explicit length: Node sends DELETE bodies unframed otherwise, and the server ignores them.
          headers: { ...headers, Accept: 'application/json', ...(payload ? { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(payload) } : {}) },
          timeout: 30_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = text;
            }
            if (status >= 200 && status < 300) return resolve(parsed as Wire<T>);
            const st = (typeof parsed === 'object' && parsed ? parsed : {}) as { reason?: string; message?: string };
            reject(new KubeApiError(status, st.reason ?? 'Unknown', `${method} ${path}: ${status} ${st.message ?? text.slice(0, 200)}`));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * A GET whose answer (any status) is handed over as it arrives, without a timeout: for proxying, e.g. a
   * stream of server-sent events through the service proxy. The caller reads or destroys the response.
   */
  async stream(path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
    const { agent, headers: auth } = await this.authOptions();
    const url = new URL(this.server + path);
    const send = url.protocol === 'https:' ? request : httpRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { method: 'GET', agent: agent as never, headers: { ...headers, ...auth } }, resolve);
      req.on('error', reject);
      req.end();
    });
  }

  /** A list of objects already in their wire form (mesh/kube/objects.ts), as informers take it. */
  list<T extends KubeObject>(path: string): Promise<KubeList<T>> {
    return this.request<unknown>('GET', path) as Promise<KubeList<T>>;
  }
  get<T>(path: string): Promise<Wire<T>> {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body: unknown): Promise<Wire<T>> {
    return this.request<T>('POST', path, body);
  }
  put<T>(path: string, body: unknown): Promise<Wire<T>> {
    return this.request<T>('PUT', path, body);
  }
  patch<T>(path: string, body: unknown, type: PatchType = 'merge'): Promise<Wire<T>> {
    return this.request<T>('PATCH', path, body, PATCH_TYPES[type]);
  }
  delete<T>(path: string, body?: unknown): Promise<Wire<T>> {
    return this.request<T>('DELETE', path, body);
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}
export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 409;
}
