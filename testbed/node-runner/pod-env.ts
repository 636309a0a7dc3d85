// Container environment as the kubelet builds it: literal values and the downward-API fields pods use.
import type { V1Container } from '@kubernetes/client-node';
import type { Pod } from '../../mesh/kube/objects.js';

export function containerEnv(pod: Pod, container: V1Container, podIp: string, hostIp: string, apiserver: { host: string; port: number }, warn: (msg: string) => void): Record<string, string> {
  const fields: Record<string, string | undefined> = {
    'metadata.name': pod.metadata?.name,
    'metadata.namespace': pod.metadata?.namespace,
    'metadata.uid': pod.metadata?.uid,
    'spec.nodeName': pod.spec?.nodeName,
    'spec.serviceAccountName': pod.spec?.serviceAccountName,
    'status.podIP': podIp,
    'status.hostIP': hostIp,
  };
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    HOSTNAME: pod.metadata?.name ?? '',
    // The kubelet injects the kubernetes Service's address; with no kube-proxy here, the reachable one.
    KUBERNETES_SERVICE_HOST: apiserver.host,
    KUBERNETES_SERVICE_PORT: String(apiserver.port),
  };
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef) {
      const path = e.valueFrom.fieldRef.fieldPath;
      const label = /^metadata\.labels\['(.+)'\]$/.exec(path);
      const value = label ? pod.metadata?.labels?.[label[1]!] : fields[path];
      if (value === undefined) warn(`env ${e.name}: fieldRef ${path} is not supported by the test bed`);
      env[e.name] = value ?? '';
    } else if (e.valueFrom) warn(`env ${e.name}: only value and fieldRef are supported by the test bed`);
  }
  return env;
}
