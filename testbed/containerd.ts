// One containerd of the test bed (a real-kubelet node's, or the image store's): its configuration, and its
// root seeded from the image store (image-store.ts) before it starts.
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './run.js';

const CNI_BIN_DIR = '/usr/lib/cni';

/** A containerd's directories: every node's, and the image store's (image-store.ts). */
export interface ContainerdDirs {
  root: string;
  state: string;
  sock: string;
  opt: string;
  runcRoot: string;
  cniConfDir: string;
}

export function containerdToml(d: ContainerdDirs, sandboxImage: string): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = "${d.root}"
state = "${d.state}"
[grpc]
  address = "${d.sock}"
[ttrpc]
  address = "${d.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${d.opt}"
[${cri}]
  # Never pulled: build.sh's pause image, in the image store every node's root is copied from.
  sandbox_image = "${sandboxImage}"
  # The kubelet asks for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which this VM lacks.
  restrict_oom_score_adj = true
  enable_selinux = false
[${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "${d.runcRoot}"
[${cri}.cni]
  bin_dir = "${CNI_BIN_DIR}"
  conf_dir = "${d.cniConfDir}"
  max_conf_num = 1
`;
}

/** The bolt databases containerd writes in place: copied; everything else of the store is hard-linked. */
const DATABASES = [join('io.containerd.metadata.v1.bolt', 'meta.db'), join('io.containerd.snapshotter.v1.overlayfs', 'metadata.db')];

/** A node's containerd root holding every image of the store (before that containerd starts). */
export async function seedContainerdRoot(store: string, root: string): Promise<void> {
  rmSync(root, { recursive: true, force: true });
  await run('cp', ['-al', store, root]);
  for (const db of DATABASES) {
    rmSync(join(root, db));
    copyFileSync(join(store, db), join(root, db));
  }
}
