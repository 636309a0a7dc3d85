// This build's version and the images it deploys: `skein version`, the drill's client, and the Helm chart's
// defaults (deploy/helm/skein: appVersion and image repositories) all name these; deploy/images/build.sh
// tags its archives the same way. version.test.ts holds them in step with package.json and the chart.
export const SKEIN_VERSION = '0.1.0';
export const IMAGE_REGISTRY = 'ghcr.io/skein-mesh';

const ref = (name: string) => `${IMAGE_REGISTRY}/${name}:${SKEIN_VERSION}`;

/** Each image with what it runs. */
export const IMAGES = {
  skein: { ref: ref('skein'), runs: 'skein-apiserver, skein-agent and the skein CLI' },
  echo: { ref: ref('skein-echo'), runs: 'the demo echo server (global service default/echo)' },
  client: { ref: ref('skein-client'), runs: "the drill's client" },
  etcd: { ref: ref('skein-etcd'), runs: "each cluster's mesh etcd (Debian's etcd 3.4.23)" },
  pause: { ref: ref('skein-pause'), runs: "the pod sandbox (the test bed's containerd runs it, never pulls one)" },
} as const;
