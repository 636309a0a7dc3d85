// The chart values the real-kubelet test bed installs with (testbedValues), rendered by the real helm: one
// host carries every node, so each agent must attach at its own kubelet's cgroup root, pin below its own
// bpffs directory and serve its own socket, and reach the mesh etcd without cluster DNS.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { CHART_DIR, helm, testbedValues } from './chart.js';

const Container = z.object({ name: z.string(), imagePullPolicy: z.string(), args: z.array(z.string()).default([]), volumeMounts: z.array(z.looseObject({ name: z.string() })).default([]) });
const Workload = z.object({
  kind: z.string(),
  metadata: z.object({ name: z.string() }),
  spec: z.object({ template: z.object({ spec: z.object({ initContainers: z.array(Container).default([]), containers: z.array(Container), volumes: z.array(z.looseObject({ name: z.string(), hostPath: z.object({ path: z.string() }).optional() })) }) }) }),
});

describe('the test bed chart values', () => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-chart-values-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('give each node its own cgroup, pins and socket, images never pulled, the mesh etcd by its Service env', async () => {
    const values = join(dir, 'values.json');
    writeFileSync(values, JSON.stringify(testbedValues({ tag: 'ab123', cluster: { name: 'east', id: 1 }, cgroup2Mount: '/sys/fs/cgroup/unified', workloadDir: '/tmp/w' })));
    // helm template needs no cluster; the kubeconfig flag helm() adds names a file that need not exist.
    const out = await helm(join(dir, 'none.yaml'), ['template', 'skein', CHART_DIR, '-n', 'skein-system', '-f', values]);
    const workloads = parseAllDocuments(out)
      .map((d) => d.toJS() as { kind?: string } | null)
      .filter((d) => d?.kind === 'DaemonSet' || d?.kind === 'Deployment')
      .map((d) => Workload.parse(d));
    const agent = workloads.find((w) => w.metadata.name === 'skein-agent')!;
    const main = agent.spec.template.spec.containers.find((c) => c.name === 'agent')!;
    // The kubelet expands $(NODE_NAME) (the container's env) in args and subPathExpr.
    expect(main.args).toEqual(
      expect.arrayContaining([
        '--cgroup=/run/skein/cgroupv2/skein/ab123/kubelet/$(NODE_NAME)',
        '--pod-cgroup-parent=/run/skein/cgroupv2/skein/ab123/kubelet/$(NODE_NAME)/kubepods/besteffort',
        '--pin-dir=/sys/fs/bpf/skein/ab123/east/$(NODE_NAME)',
        '--mesh-etcd=https://$(SKEIN_MESH_ETCD_SERVICE_HOST):$(SKEIN_MESH_ETCD_SERVICE_PORT)',
      ]),
    );
    expect(main.volumeMounts.find((m) => m.name === 'workload-socket')).toMatchObject({ subPathExpr: '$(NODE_NAME)' });
    const hostPaths = Object.fromEntries(agent.spec.template.spec.volumes.flatMap((v) => (v.hostPath ? [[v.name, v.hostPath.path]] : [])));
    expect(hostPaths).toMatchObject({ cgroup2: '/sys/fs/cgroup/unified', 'workload-socket': '/tmp/w' });
    const all = workloads.flatMap((w) => [...w.spec.template.spec.initContainers, ...w.spec.template.spec.containers]);
    expect(all.map((c) => `${c.name} ${c.imagePullPolicy}`)).toEqual(all.map((c) => `${c.name} Never`));
  });
});
