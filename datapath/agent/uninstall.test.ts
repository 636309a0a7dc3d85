import { describe, expect, it } from 'vitest';
import type { Wire } from '../../mesh/kube/objects.js';
import { KubeApiError, type KubeRest } from '../../mesh/kube/rest.js';
import { beingUninstalled, ownDaemonSet } from './uninstall.js';

const api = (answer: (path: string) => unknown): Pick<KubeRest, 'get'> => ({
  get: async <T>(path: string) => {
    const a = answer(path);
    if (a instanceof Error) throw a;
    return a as Wire<T>;
  },
});
const DS = '/apis/apps/v1/namespaces/skein-system/daemonsets/skein-agent';

describe('is Skein being uninstalled (the agent takes its datapath away only then)?', () => {
  it('finds the DaemonSet controlling its pod, and none outside one', async () => {
    const pod = { metadata: { ownerReferences: [{ kind: 'ReplicaSet', name: 'x', controller: false }, { kind: 'DaemonSet', name: 'skein-agent', controller: true }] } };
    expect(await ownDaemonSet(api(() => pod), 'skein-system', 'skein-agent-abc')).toBe('skein-agent');
    expect(await ownDaemonSet(api(() => ({ metadata: {} })), 'skein-system', 'p')).toBeUndefined();
  });

  it('yes when the DaemonSet is gone or going, or the API no longer knows the agent', async () => {
    expect(await beingUninstalled(api(() => new KubeApiError(404, 'NotFound', 'gone')), 'skein-system', 'skein-agent')).toBe(true);
    expect(await beingUninstalled(api(() => ({ metadata: { deletionTimestamp: '2026-11-27T18:00:00Z' } })), 'skein-system', 'skein-agent')).toBe(true);
    expect(await beingUninstalled(api(() => new KubeApiError(401, 'Unauthorized', 'no such token')), 'skein-system', 'skein-agent')).toBe(true);
    expect(await beingUninstalled(api(() => new KubeApiError(403, 'Forbidden', 'no role')), 'skein-system', 'skein-agent')).toBe(true);
  });

  it('no on an upgrade or restart (the DaemonSet stays), and no when unsure (the API unreachable or failing)', async () => {
    expect(await beingUninstalled(api((p) => (p === DS ? { metadata: { name: 'skein-agent' } } : new Error(p))), 'skein-system', 'skein-agent')).toBe(false);
    expect(await beingUninstalled(api(() => Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), 'skein-system', 'skein-agent')).toBe(false);
    expect(await beingUninstalled(api(() => new KubeApiError(500, 'InternalError', 'etcd timeout')), 'skein-system', 'skein-agent')).toBe(false);
  });
});
