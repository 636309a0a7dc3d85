import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Wire } from '../../mesh/kube/objects.js';
import { KubeApiError, type KubeRest } from '../../mesh/kube/rest.js';
import { afterEvent, daemonSetPath, lookAtDaemonSet, removeEmptyParents, shutdownVerdict, type DaemonSetLook, type DaemonSetSeen } from './uninstall.js';

const PATH = daemonSetPath('skein-system', 'skein-agent');
const api = (answer: () => unknown): Pick<KubeRest, 'get'> => ({
  get: async <T>(path: string) => {
    if (path !== PATH) throw new Error(`asked for ${path}`);
    const a = answer();
    if (a instanceof Error) throw a;
    return a as Wire<T>;
  },
});
const present = { metadata: { name: 'skein-agent' } };
const deleting = { metadata: { name: 'skein-agent', deletionTimestamp: '2026-11-27T18:00:00Z' } };

describe('the watch of the agent DaemonSet', () => {
  it('sees a deletion, a deletion under way (foreground cascade), and the DaemonSet present again', () => {
    expect(afterEvent('delete', present)).toBe('deleted');
    expect(afterEvent('update', deleting)).toBe('deleting');
    expect(afterEvent('add', present)).toBe('present');
    // Deleted with --cascade=orphan, then made again (a selector change): the new one counts.
    expect(afterEvent('add', { metadata: { name: 'skein-agent' } })).toBe('present');
  });
});

describe('at shutdown, the agent takes its datapath away only when Skein is being uninstalled', () => {
  const uninstall = (seen: DaemonSetSeen, look?: DaemonSetLook) => shutdownVerdict(seen, look).uninstall;

  it('yes when the watch saw the DaemonSet deleted or being deleted, whatever a lookup now says (its RBAC went with it)', () => {
    for (const look of [undefined, 'present', { unclear: '401 Unauthorized' }, { unclear: '403 Forbidden' }] as const) {
      expect(uninstall('deleted', look)).toBe(true);
      expect(uninstall('deleting', look)).toBe(true);
    }
  });

  it('yes when the watch showed it present but the lookup finds it gone or being deleted (the deletion raced the watch)', () => {
    expect(uninstall('present', 'not-found')).toBe(true);
    expect(uninstall('present', 'deleting')).toBe(true);
  });

  it('no on an upgrade, restart, eviction or liveness kill: the DaemonSet is there', () => {
    expect(uninstall('present', 'present')).toBe(false);
  });

  it('no when unsure: token or role refused, the API failing or unreachable, no lookup at all', () => {
    for (const unclear of ['401 Unauthorized', '403 Forbidden', '500 InternalError', 'connect ECONNREFUSED', 'no answer in 1500 ms']) {
      expect(uninstall('present', { unclear }), unclear).toBe(false);
    }
    expect(uninstall('present')).toBe(false);
  });

  it('no when the DaemonSet was never seen (a wrong --daemonset): a 404 then proves nothing', () => {
    expect(uninstall('never', 'not-found')).toBe(false);
    expect(uninstall('never')).toBe(false);
    expect(shutdownVerdict('never', 'not-found').reason).toMatch(/never seen/);
  });
});

describe('the lookup at shutdown', () => {
  it('maps every API answer: present, deleting, 404, and every other failure as unclear', async () => {
    expect(await lookAtDaemonSet(api(() => present), PATH, 1000)).toBe('present');
    expect(await lookAtDaemonSet(api(() => deleting), PATH, 1000)).toBe('deleting');
    expect(await lookAtDaemonSet(api(() => new KubeApiError(404, 'NotFound', 'gone')), PATH, 1000)).toBe('not-found');
    expect(await lookAtDaemonSet(api(() => new KubeApiError(401, 'Unauthorized', 'token')), PATH, 1000)).toEqual({ unclear: '401 Unauthorized' });
    expect(await lookAtDaemonSet(api(() => new KubeApiError(403, 'Forbidden', 'role')), PATH, 1000)).toEqual({ unclear: '403 Forbidden' });
    expect(await lookAtDaemonSet(api(() => new KubeApiError(500, 'InternalError', 'etcd')), PATH, 1000)).toEqual({ unclear: '500 InternalError' });
    expect(await lookAtDaemonSet(api(() => new Error('connect ECONNREFUSED')), PATH, 1000)).toEqual({ unclear: 'connect ECONNREFUSED' });
  });

  it('gives up after its bound: an API that never answers leaves the datapath', async () => {
    const never: Pick<KubeRest, 'get'> = { get: () => new Promise(() => {}) };
    const look = await lookAtDaemonSet(never, PATH, 30);
    expect(look).toEqual({ unclear: 'no answer in 30 ms' });
    expect(shutdownVerdict('present', look).uninstall).toBe(false);
  });
});

describe('removing a per-node pin directory', () => {
  let root = '';
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('removes the empty parents up to the bpffs root, and stops at one another node still uses', () => {
    root = mkdtempSync(join(tmpdir(), 'skein-pins-'));
    const mine = join(root, 'skein', 'tag', 'west', 'node-1');
    const other = join(root, 'skein', 'tag', 'east', 'node-1');
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'pin'), '');
    mkdirSync(mine, { recursive: true });
    rmSync(mine, { recursive: true });
    removeEmptyParents(mine, root);
    expect(existsSync(join(root, 'skein', 'tag', 'west'))).toBe(false);
    expect(existsSync(other)).toBe(true);
    expect(existsSync(root)).toBe(true);
    rmSync(other, { recursive: true });
    removeEmptyParents(other, root);
    expect(existsSync(join(root, 'skein'))).toBe(false);
    expect(existsSync(root)).toBe(true);
  });
});
