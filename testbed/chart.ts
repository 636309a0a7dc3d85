// Skein on a real-kubelet test-bed cluster, installed as users install it: `helm install` of
// deploy/helm/skein from the images build.sh made (imported into every node's containerd, never pulled),
// with the values a shared host needs (every node is a network namespace of one machine: each agent
// attaches at its own kubelet's cgroup root, pins below its own bpffs directory, serves its own socket).
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './repo.js';
import { kubeletCgroupRoot } from './kubelet-node.js';
import { clusterPodCidr, SERVICE_CIDR } from './topology.js';

const pexec = promisify(execFile);

export const CHART_DIR = join(REPO_ROOT, 'deploy', 'helm', 'skein');
export const SKEIN_NAMESPACE = 'skein-system';

/** helm, built from its Go module by deploy/scripts/build-tools.sh (cached). */
async function helmBinary(): Promise<string> {
  const { stdout } = await pexec('bash', [join(REPO_ROOT, 'deploy', 'scripts', 'build-tools.sh'), 'helm'], { maxBuffer: 1 << 20 });
  return stdout.trim();
}

/** The chart's values for one test-bed cluster. */
export function testbedValues(o: { tag: string; cluster: { name: string; id: number }; cgroup2Mount: string; workloadDir: string; apiserverArgs?: string[] }) {
  return {
    cluster: { name: o.cluster.name, id: o.cluster.id, podCidr: clusterPodCidr(o.cluster.id), serviceCidr: SERVICE_CIDR },
    image: { pullPolicy: 'Never' },
    meshEtcd: {
      image: { pullPolicy: 'Never' },
      // No cluster DNS on the test bed: the Service's address from the kubelet's environment variables.
      inClusterUrl: 'https://$(SKEIN_MESH_ETCD_SERVICE_HOST):$(SKEIN_MESH_ETCD_SERVICE_PORT)',
    },
    agent: {
      cgroupRoot: o.cgroup2Mount,
      nodeCgroup: kubeletCgroupRoot(o.tag, '$(NODE_NAME)'),
      pinDir: `skein/${o.tag}/${o.cluster.name}/$(NODE_NAME)`,
      workloadSocketDir: o.workloadDir,
      workloadSocketPerNode: true,
      // Small requests: a 2-core machine carries every node of every cluster.
      resources: { requests: { cpu: '10m', memory: '64Mi' } },
    },
    apiserver: { resources: { requests: { cpu: '10m', memory: '64Mi' } }, extraArgs: o.apiserverArgs ?? [] },
  };
}

/** helm against the cluster of `kubeconfig`; its cache, config and data beside that file, not in $HOME. */
export async function helm(kubeconfig: string, args: string[], timeoutMs = 180_000): Promise<string> {
  const bin = await helmBinary();
  const dir = dirname(kubeconfig);
  try {
    const { stdout } = await pexec(bin, [...args, '--kubeconfig', kubeconfig], { timeout: timeoutMs, maxBuffer: 16 << 20, env: { ...process.env, HELM_CACHE_HOME: join(dir, '.helm-cache'), HELM_CONFIG_HOME: join(dir, '.helm-config'), HELM_DATA_HOME: join(dir, '.helm-data') } });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`helm ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** `helm install skein` into skein-system and waits until its pods are ready. */
export async function installChart(o: { kubeconfig: string; valuesFile: string; values: object; wait?: boolean }): Promise<void> {
  writeFileSync(o.valuesFile, JSON.stringify(o.values, null, 2));
  await helm(o.kubeconfig, ['install', 'skein', CHART_DIR, '-n', SKEIN_NAMESPACE, '--create-namespace', '-f', o.valuesFile, ...(o.wait === false ? [] : ['--wait', '--timeout', '100s'])], 240_000);
}
