// `skein local up|down|exec`: the Docker-free local mesh for trying Skein and for its e2e tests.
import { positiveInt } from './flags.js';
import type { Command } from 'commander';
import { dirname } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { parseClusterRef } from '../../mesh/schema/cluster.js';
// The state dir layout is light; the test bed itself (control planes, netns, cgroups, BPF) loads only when
// a `skein local` command runs, so the rest of the CLI never pays for it.
import { defaultStateDir, statePaths } from '../../testbed/state.js';

const testbed = () => import('../../testbed/testbed.js');
const cgroups = () => import('../../testbed/cgroup.js');

/**
 * `skein drill --fault blackhole`: the network faults of the test bed cluster `kc` points at, or undefined
 * when it is not a cluster of a test bed on this machine. Looked for in --state-dir if given, else next to
 * the kubeconfig (`skein local up` writes DIR/kubeconfig) and in the default state dir. The test bed's
 * fault code loads only here, when a drill asks.
 */
export async function testbedNetFaults(kc: KubeConfig, where: { stateDir?: string; kubeconfig?: string }) {
  const dirs = where.stateDir ? [where.stateDir] : [...(where.kubeconfig ? [dirname(where.kubeconfig)] : []), defaultStateDir()];
  return (await import('../../testbed/faults.js')).openNetFaults(kc, dirs);
}

const stamp = (t0: number) => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`;

export function registerLocal(program: Command): void {
  const local = program.command('local').description('run clusters on this machine from real Kubernetes binaries, etcd and network namespaces (no Docker)');

  local
    .command('up')
    .description('start local clusters, each with a control plane, nodes, a mesh etcd and the echo service')
    .option('--clusters <list>', 'comma-separated NAME:ID pairs', 'east:1,west:2')
    .option('--nodes <n>', 'nodes per cluster', '2')
    .option('--state-dir <dir>', 'where state, kubeconfig and logs go', defaultStateDir())
    .option('--no-echo', 'do not deploy the global echo service and client')
    .option('--kubelet', 'run nodes on the real kubelet + containerd and install Skein with its Helm chart from the built images')
    .action(async (o: { clusters: string; nodes: string; stateDir: string; echo: boolean; kubelet?: boolean }) => {
      const t0 = Date.now();
      const clusters = o.clusters.split(',').filter(Boolean).map(parseClusterRef);
      const [{ CLIENT_IN_IMAGE, contextName, up }, { cgroupPids, cgroupRssBytes }] = await Promise.all([testbed(), cgroups()]);
      const state = await up({ stateDir: o.stateDir, clusters, nodes: positiveInt('--nodes', o.nodes, 16), echo: o.echo, kubelet: o.kubelet === true, progress: (m) => console.error(`${stamp(t0)} ${m}`) });
      const paths = statePaths(o.stateDir);
      console.log(`\nLocal mesh is up in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${state.clusters.map((c) => `${c.name} (id ${c.id}, ${c.nodes} nodes)`).join(', ')}`);
      console.log(`  ${cgroupPids(state.cgroupRoot).length} processes using ${Math.round(cgroupRssBytes(state.cgroupRoot) / 1048576)} MiB resident`);
      console.log(`  export KUBECONFIG=${paths.kubeconfig}`);
      for (const c of state.clusters) console.log(`  ${paths.bin}/kubectl --context ${contextName(c.name)} get pods -o wide`);
      // Real kubelets: exec runs in the pod's container, whose image has the client under node, not on PATH.
      const client = state.runtime === 'kubelet' ? CLIENT_IN_IMAGE.join(' ') : 'skein-client';
      console.log(`  skein local exec --state-dir ${paths.dir} --context ${contextName(state.clusters[0]!.name)} --pod default/<client pod> -- ${client} http <pod ip>:8080`);
      console.log(`  skein local down --state-dir ${paths.dir}`);
    });

  local
    .command('down')
    .description('remove every process, network namespace, cgroup and BPF pin of a local mesh (also after a crash)')
    .option('--state-dir <dir>', 'the state dir given to up', defaultStateDir())
    .action(async (o: { stateDir: string }) => {
      const r = await (await testbed()).down(o.stateDir);
      console.log(`removed ${r.netns.length} network namespaces${r.hadProcesses ? ' and all processes' : ''} of ${statePaths(o.stateDir).dir}`);
    });

  local
    .command('exec')
    .description("run a command inside a pod's network namespace and its node's cgroup (like kubectl exec)")
    .requiredOption('--context <ctx>', 'the cluster, as skein-<name> or <name>')
    .requiredOption('--pod <ns/name>', 'the pod')
    .option('--state-dir <dir>', 'the state dir given to up', defaultStateDir())
    .argument('<command...>', 'the command and its arguments, after --')
    .action(async (argv: string[], o: { context: string; pod: string; stateDir: string }) => {
      process.exitCode = (await (await testbed()).exec({ stateDir: o.stateDir, context: o.context, pod: o.pod, argv })).code;
    });
}
