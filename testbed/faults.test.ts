import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { blackholeRules, openNetFaults } from './faults.js';
import { writeState } from './state.js';

describe('blackhole', () => {
  it('drops everything in the pod but loopback and its node (the readiness probes), in chains of its own jumped to first', () => {
    const rules = blackholeRules('10.3.1.1');
    expect(rules.split('\n')).toEqual(
      expect.arrayContaining(['-A SKEIN-DRILL-IN -s 10.3.1.1/32 -j RETURN', '-A SKEIN-DRILL-IN -j DROP', '-A SKEIN-DRILL-OUT -d 10.3.1.1/32 -j RETURN', '-A SKEIN-DRILL-OUT -j DROP', '-I INPUT 1 -j SKEIN-DRILL-IN', '-I OUTPUT 1 -j SKEIN-DRILL-OUT']),
    );
    expect(rules.indexOf('-i lo -j RETURN')).toBeLessThan(rules.indexOf('-A SKEIN-DRILL-IN -j DROP'));
  });

  it('starts dropping at one whole second of the kernel clock in every pod, so the fault reaches them together', () => {
    const rules = blackholeRules('10.3.1.1', Date.UTC(2026, 10, 27, 16, 30, 5));
    expect(rules.split('\n')).toEqual(expect.arrayContaining(['-A SKEIN-DRILL-IN -m time --datestart 2026-11-27T16:30:05 -j DROP', '-A SKEIN-DRILL-OUT -m time --datestart 2026-11-27T16:30:05 -j DROP']));
  });

  it('knows a test bed cluster by its API server, and nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-faults-'));
    try {
      writeState(dir, {
        version: 1,
        tag: 'abcde',
        phase: 'up',
        kubeVersion: 'v1.36.3',
        cgroupRoot: '/sys/fs/cgroup/skein',
        createdAt: new Date().toISOString(),
        clusters: [{ name: 'east', id: 1, nodes: 2, apiserverUrl: 'https://10.0.1.1:6443', kubeEtcdUrl: 'https://10.0.1.1:2379', meshEtcdUrl: 'https://10.0.1.1:2381', agents: [] }],
      });
      const kc = (server: string) => {
        const k = new KubeConfig();
        k.loadFromOptions({ clusters: [{ name: 'c', server }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
        return k;
      };
      expect(openNetFaults(kc('https://10.0.1.1:6443'), [join(dir, 'missing'), dir])?.where).toBe(`test bed ${dir}, cluster east`);
      expect(openNetFaults(kc('https://kind-control-plane:6443'), [dir])).toBeUndefined();
      expect(openNetFaults(kc('https://10.0.1.1:6443'), [join(dir, 'missing')])).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('restores only pod network namespaces of its own test bed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skein-faults-'));
    try {
      writeState(dir, { version: 1, tag: 'abcde', phase: 'up', kubeVersion: 'v', cgroupRoot: '/x', createdAt: new Date().toISOString(), clusters: [{ name: 'east', id: 1, nodes: 1, apiserverUrl: 'https://10.0.1.1:6443', kubeEtcdUrl: 'https://10.0.1.1:2379', meshEtcdUrl: 'https://10.0.1.1:2381', agents: [] }] });
      const k = new KubeConfig();
      k.loadFromOptions({ clusters: [{ name: 'c', server: 'https://10.0.1.1:6443' }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
      const faults = openNetFaults(k, [dir])!;
      await expect(faults.restore(['sk-fffff-p-0123456789ab'])).rejects.toThrow('sk-fffff-p-0123456789ab is not a pod network namespace of test bed');
      await expect(faults.restore(['host; rm -rf /'])).rejects.toThrow('is not a pod network namespace');
      // A namespace of its own that is gone (its pod deleted) took its rules with it.
      await expect(faults.restore(['sk-abcde-p-0123456789ab'])).resolves.toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
