// The Helm chart as helm (built from its Go module, deploy/scripts/build-tools.sh) lints and renders it:
// default and kind values, parsed and checked for what matters (no privileged container, the agent's
// exact capabilities and host mounts, least-privilege RBAC, the flags the processes get), and bad values
// refused by values.schema.json with the field named.
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { IMAGES } from '../version.js';

const CHART = fileURLToPath(new URL('skein', import.meta.url));
const KIND_VALUES = fileURLToPath(new URL('../kind/values.yaml', import.meta.url));
const BUILD_TOOLS = fileURLToPath(new URL('../scripts/build-tools.sh', import.meta.url));
const NAMESPACE = 'skein-system';
let helm = '';

const SecurityContext = z.object({
  privileged: z.boolean().optional(),
  runAsUser: z.number().optional(),
  runAsNonRoot: z.boolean().optional(),
  allowPrivilegeEscalation: z.boolean().optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  capabilities: z.object({ add: z.array(z.string()).optional(), drop: z.array(z.string()).optional() }).optional(),
});
const Container = z.object({
  name: z.string(),
  image: z.string(),
  imagePullPolicy: z.string().optional(),
  command: z.array(z.string()).optional(),
  args: z.array(z.string()).default([]),
  securityContext: SecurityContext.optional(),
  volumeMounts: z.array(z.object({ name: z.string(), mountPath: z.string(), mountPropagation: z.string().optional(), readOnly: z.boolean().optional() })).default([]),
});
const Workload = z.object({
  kind: z.enum(['Deployment', 'DaemonSet']),
  metadata: z.object({ name: z.string(), namespace: z.string() }),
  spec: z.object({
    template: z.object({
      spec: z.object({
        serviceAccountName: z.string(),
        hostNetwork: z.boolean().optional(),
        hostPID: z.boolean().optional(),
        securityContext: SecurityContext.optional(),
        initContainers: z.array(Container).default([]),
        containers: z.array(Container),
        volumes: z.array(z.object({ name: z.string(), hostPath: z.object({ path: z.string(), type: z.string().optional() }).optional() })).default([]),
      }),
    }),
  }),
});
const Rule = z.object({ apiGroups: z.array(z.string()), resources: z.array(z.string()), verbs: z.array(z.string()), resourceNames: z.array(z.string()).optional() });
const RbacRole = z.object({ kind: z.enum(['ClusterRole', 'Role']), metadata: z.object({ name: z.string(), namespace: z.string().optional() }), rules: z.array(Rule) });
const Service = z.object({ kind: z.literal('Service'), metadata: z.object({ name: z.string() }), spec: z.object({ type: z.string().optional(), ports: z.array(z.object({ name: z.string(), port: z.number(), nodePort: z.number().optional() })) }) });
const Doc = z.looseObject({ kind: z.string(), metadata: z.looseObject({ name: z.string() }) });

const clusterArgs = ['--set', 'cluster.name=east', '--set', 'cluster.id=1'];

async function render(args: string[] = [], namespace = NAMESPACE): Promise<z.infer<typeof Doc>[]> {
  const { stdout } = await promisify(execFile)(helm, ['template', 'skein', CHART, '-n', namespace, ...args], { maxBuffer: 16 << 20 });
  return parseAllDocuments(stdout).map((d) => d.toJS() as unknown).filter((d) => d !== null).map((d) => Doc.parse(d));
}

/** helm's error text for values it refuses. */
async function refused(args: string[], namespace = NAMESPACE): Promise<string> {
  try {
    await render(args, namespace);
  } catch (err) {
    return String((err as { stderr?: string }).stderr);
  }
  throw new Error(`helm rendered ${args.join(' ')}`);
}

const workload = (docs: z.infer<typeof Doc>[], kind: string, name: string) => Workload.parse(docs.find((d) => d.kind === kind && d.metadata.name === name));
const role = (docs: z.infer<typeof Doc>[], kind: string, name: string) => RbacRole.parse(docs.find((d) => d.kind === kind && d.metadata.name === name));
const containers = (w: z.infer<typeof Workload>) => [...w.spec.template.spec.initContainers, ...w.spec.template.spec.containers];
const byName = (w: z.infer<typeof Workload>, name: string) => containers(w).find((c) => c.name === name)!;

describe('Helm chart deploy/helm/skein', () => {
  beforeAll(() => {
    // Cached after install.sh; a first build from the Go module takes minutes.
    helm = execFileSync('bash', [BUILD_TOOLS, 'helm'], { encoding: 'utf8' }).trim();
  }, 900_000);

  it('passes helm lint with the default and the kind values', async () => {
    await promisify(execFile)(helm, ['lint', '--strict', CHART, '-n', NAMESPACE]);
    await promisify(execFile)(helm, ['lint', '--strict', CHART, '-n', NAMESPACE, '-f', KIND_VALUES, ...clusterArgs]);
  });

  it('renders the apiserver with its mesh etcd sidecar, non-root and without capabilities', async () => {
    const docs = await render(clusterArgs);
    const api = workload(docs, 'Deployment', 'skein-apiserver');
    expect(api.metadata.namespace).toBe(NAMESPACE);
    expect(api.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532 });
    expect(containers(api).map((c) => c.name)).toEqual(['mesh-etcd-pki', 'mesh-etcd', 'apiserver']);
    for (const c of containers(api)) {
      expect(c.securityContext, c.name).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
      expect(c.securityContext?.capabilities?.add, c.name).toBeUndefined();
    }
    expect(byName(api, 'apiserver').image).toBe(IMAGES.skein.ref);
    expect(byName(api, 'mesh-etcd').image).toBe(IMAGES.etcd.ref);
    expect(byName(api, 'apiserver').args).toEqual(expect.arrayContaining(['--cluster-name=east', '--cluster-id=1', '--mesh-etcd=https://127.0.0.1:2379', '--mesh-advertise=https://$(HOST_IP):32379', '--sign-node-requests']));
    expect(byName(api, 'apiserver').args.some((a) => a.startsWith('--cluster-pod-cidr'))).toBe(false);
    // etcd: TLS with client certificates only, on the certificate the init step wrote.
    expect(byName(api, 'mesh-etcd').args).toEqual(expect.arrayContaining(['--client-cert-auth=true', '--trusted-ca-file=/etc/skein/mesh-etcd/ca.crt', '--cert-file=/etc/skein/mesh-etcd/server.crt', '--listen-client-urls=https://0.0.0.0:2379']));
    // The apiserver renews that certificate in the same volume, which etcd only reads.
    expect(byName(api, 'apiserver').args).toContain('--mesh-etcd-serving-dir=/etc/skein/mesh-etcd');
    expect(byName(api, 'apiserver').volumeMounts).toContainEqual(expect.objectContaining({ name: 'mesh-etcd-pki', mountPath: '/etc/skein/mesh-etcd' }));
    expect(byName(api, 'mesh-etcd').volumeMounts).toContainEqual(expect.objectContaining({ name: 'mesh-etcd-pki', readOnly: true }));
    const etcdService = Service.parse(docs.find((d) => d.kind === 'Service' && d.metadata.name === 'skein-mesh-etcd'));
    expect(etcdService.spec).toMatchObject({ type: 'NodePort', ports: [{ name: 'mesh-etcd', port: 2379, nodePort: 32379 }] });
    // What `skein status` reaches through the API's service proxy (mesh/service-ref.ts).
    expect(Service.parse(docs.find((d) => d.kind === 'Service' && d.metadata.name === 'skein-apiserver')).spec.ports).toEqual([expect.objectContaining({ name: 'http', port: 9876 })]);
  });

  it('renders the agent unprivileged with exactly BPF, NET_ADMIN, SYS_ADMIN and PERFMON and its host mounts', async () => {
    const docs = await render(clusterArgs);
    for (const w of docs.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet').map((d) => Workload.parse(d))) {
      for (const c of containers(w)) expect(c.securityContext?.privileged ?? false, `${w.metadata.name}/${c.name}`).toBe(false);
    }
    const agent = workload(docs, 'DaemonSet', 'skein-agent');
    const main = byName(agent, 'agent');
    expect(main.securityContext?.capabilities).toEqual({ drop: ['ALL'], add: ['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'PERFMON'] });
    expect(main.securityContext?.allowPrivilegeEscalation).toBe(false);
    expect(byName(agent, 'node-identity').securityContext).toMatchObject({ runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    const hostPaths = Object.fromEntries(agent.spec.template.spec.volumes.filter((v) => v.hostPath).map((v) => [v.name, v.hostPath!.path]));
    expect(hostPaths).toEqual({ bpffs: '/sys/fs/bpf', cgroup2: '/sys/fs/cgroup', 'workload-socket': '/run/skein/workload' });
    const mounts = Object.fromEntries(main.volumeMounts.map((m) => [m.name, m]));
    expect(mounts.bpffs).toMatchObject({ mountPath: '/sys/fs/bpf', mountPropagation: 'HostToContainer' });
    expect(mounts.cgroup2).toMatchObject({ mountPath: '/run/skein/cgroupv2' });
    expect(mounts['workload-socket']).toMatchObject({ mountPath: '/run/skein/workload' });
    expect(main.args).toEqual(expect.arrayContaining(['--pin-dir=/sys/fs/bpf/skein', '--cgroup=/run/skein/cgroupv2', '--workload-socket=/run/skein/workload/agent.sock', '--mesh-etcd=https://skein-mesh-etcd.skein-system.svc:2379', '--pod-cgroup-parent=/run/skein/cgroupv2/kubepods']));
    expect(agent.spec.template.spec).toMatchObject({ hostNetwork: true, hostPID: true, serviceAccountName: 'skein-agent' });
  });

  it('grants least-privilege RBAC: reads cluster-wide, Secrets only in skein-system, the agent its pods and its identity request', async () => {
    const docs = await render(clusterArgs);
    const allRules = docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role').flatMap((d) => RbacRole.parse(d).rules);
    for (const r of allRules) {
      expect(r.verbs).not.toContain('*');
      expect(r.resources).not.toContain('*');
      expect(r.verbs).not.toContain('delete');
      expect(r.verbs).not.toContain('escalate');
    }
    const apiserver = role(docs, 'ClusterRole', 'skein-apiserver');
    expect(apiserver.rules.flatMap((r) => r.resources)).not.toContain('secrets');
    expect(apiserver.rules.flatMap((r) => r.verbs.filter((v) => !['get', 'list', 'watch'].includes(v)).map((v) => `${v} ${r.resources.join(',')}`))).toEqual([
      'create events',
      'patch events',
      'update certificatesigningrequests/approval,certificatesigningrequests/status',
      'approve signers',
      'sign signers',
    ]);
    // It approves and signs for its own signer only.
    expect(apiserver.rules.find((r) => r.resources.includes('signers'))?.resourceNames).toEqual(['skein.io/node']);
    const secrets = role(docs, 'Role', 'skein-apiserver');
    expect(secrets.metadata.namespace).toBe(NAMESPACE);
    expect(secrets.rules).toEqual([
      { apiGroups: [''], resources: ['secrets'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'] },
      // The dashboard reads the drill history `skein drill` keeps: that one ConfigMap, read only.
      { apiGroups: [''], resources: ['configmaps'], resourceNames: ['skein-drills'], verbs: ['get'] },
    ]);
    expect(role(docs, 'ClusterRole', 'skein-agent').rules).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['certificates.k8s.io'], resources: ['certificatesigningrequests'], verbs: ['create', 'get'] },
    ]);
    // Its own DaemonSet by name, read only: followed to tell an uninstall from an upgrade at shutdown.
    const own = role(docs, 'Role', 'skein-agent');
    expect(own.metadata.namespace).toBe(NAMESPACE);
    expect(own.rules).toEqual([{ apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['skein-agent'], verbs: ['get', 'list', 'watch'] }]);
    const agent = byName(workload(docs, 'DaemonSet', 'skein-agent'), 'agent');
    expect(agent.args).toContain('--daemonset=$(POD_NAMESPACE)/skein-agent');
  });

  it('renders the kind values: pinned pod CIDR, NodePort, images never pulled, systemd pod cgroups, peer routes', async () => {
    const docs = await render(['-f', KIND_VALUES, ...clusterArgs, '--set', 'cluster.podCidr=10.1.0.0/16', '--set', 'cluster.serviceCidr=172.20.1.0/24']);
    const api = workload(docs, 'Deployment', 'skein-apiserver');
    expect(byName(api, 'apiserver').args).toEqual(expect.arrayContaining(['--cluster-pod-cidr=10.1.0.0/16', '--service-cidr=172.20.1.0/24']));
    // kind load image-archive puts the images on the nodes: nothing is pulled.
    const all = docs.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet').flatMap((d) => containers(Workload.parse(d)));
    expect(all.map((c) => `${c.name} ${c.imagePullPolicy}`)).toEqual(all.map((c) => `${c.name} Never`));
    const agent = workload(docs, 'DaemonSet', 'skein-agent');
    expect(byName(agent, 'agent').args).toContain('--pod-cgroup-parent=/run/skein/cgroupv2/kubepods.slice/kubepods-burstable.slice');
    // kind's clusters share one Docker network: the agents route the peers' pod CIDRs; off by default.
    expect(byName(agent, 'agent').args).toContain('--peer-routes');
    expect(byName(workload(await render(clusterArgs), 'DaemonSet', 'skein-agent'), 'agent').args).not.toContain('--peer-routes');
    expect(docs.some((d) => d.kind === 'ServiceMonitor')).toBe(false);
  });

  it('renders ServiceMonitors for the apiserver and the agents when asked', async () => {
    const docs = await render([...clusterArgs, '--set', 'serviceMonitor.enabled=true']);
    expect(docs.filter((d) => d.kind === 'ServiceMonitor').map((d) => d.metadata.name)).toEqual(['skein-apiserver', 'skein-agent']);
  });

  it('refuses bad values at render time, naming the field', async () => {
    const cases: [string[], RegExp | string, string?][] = [
      [['--set', 'cluster.id=300'], /\/cluster\/id.*maximum/s],
      [['--set', 'cluster.id=0'], /\/cluster\/id.*minimum/s],
      [['--set', 'cluster.name=East_1'], /\/cluster\/name.*does not match pattern/s],
      [['--set', 'cluster.podCidr=10.1.0.0'], /\/cluster\/podCidr/],
      [['--set', 'meshEtcd.service.type=Ingress'], /\/meshEtcd\/service\/type/],
      [['--set', 'agent.peerRoutes=yes'], /\/agent\/peerRoutes.*boolean/s],
      [['--set', 'meshEtcd.service.nodePort=2379'], /\/meshEtcd\/service\/nodePort.*minimum/s],
      // A typo or a value the chart does not have is refused, not ignored.
      [['--set', 'agent.privileged=true'], /\/agent.*additional properties 'privileged' not allowed/s],
      [['--set', 'meshEtcd.service.type=LoadBalancer'], 'meshEtcd.advertise is required with meshEtcd.service.type LoadBalancer'],
      [['--set', 'agent.nodeCgroup=relative'], /\/agent\/nodeCgroup.*does not match pattern/s],
      [['--set', 'agent.pinDir=/sys/fs/bpf/x'], /\/agent\/pinDir.*does not match pattern/s],
      [['--set', 'meshEtcd.inClusterUrl=http://etcd:2379'], /\/meshEtcd\/inClusterUrl/],
      [[], 'install Skein into the namespace skein-system (got "kube-system")', 'kube-system'],
    ];
    const errors = await Promise.all(cases.map(([args, , ns]) => refused(args, ns)));
    cases.forEach(([args, want], i) => (typeof want === 'string' ? expect(errors[i], args.join(' ')).toContain(want) : expect(errors[i], args.join(' ')).toMatch(want)));
  });
});
