// One etcd member (Debian's etcd-server 3.4) on loopback: the Kubernetes store and the mesh store.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnDaemon, waitFor } from './daemon.js';
import { httpsGet } from './https.js';
import { freePort } from './ports.js';

export const ETCD_BIN = process.env.SKEIN_ETCD_BIN ?? '/usr/bin/etcd';

export interface EtcdTls {
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
}

export interface StartedEtcd {
  pid: number;
  clientUrl: string;
}

export async function startEtcd(opts: { name: string; dataDir: string; cgroup: string; logFile: string; tls?: EtcdTls; host?: string }): Promise<StartedEtcd> {
  if (!existsSync(ETCD_BIN)) throw new Error(`etcd not found at ${ETCD_BIN}: install Debian's etcd-server (apt-get install etcd-server) or set SKEIN_ETCD_BIN`);
  const [clientPort, peerPort] = [await freePort(opts.host), await freePort()];
  const scheme = opts.tls ? 'https' : 'http';
  const clientUrl = `${scheme}://${opts.host ?? '127.0.0.1'}:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    ETCD_BIN,
    `--name=${opts.name}`,
    `--data-dir=${opts.dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${opts.name}=${peerUrl}`,
    '--initial-cluster-state=new',
    '--logger=zap',
    '--log-level=warn',
    '--snapshot-count=10000',
    '--quota-backend-bytes=4294967296',
  ];
  if (opts.tls) {
    args.push(`--cert-file=${opts.tls.certFile}`, `--key-file=${opts.tls.keyFile}`, `--trusted-ca-file=${opts.tls.trustedCaFile}`, '--client-cert-auth=true');
  }
  const pid = spawnDaemon({ cgroup: opts.cgroup, logFile: opts.logFile, argv: args });
  if (opts.tls) {
    const tls = { ca: readFileSync(opts.tls.trustedCaFile, 'utf8'), cert: readFileSync(opts.tls.certFile, 'utf8'), key: readFileSync(opts.tls.keyFile, 'utf8') };
    await waitFor(`etcd ${opts.name} at ${clientUrl}`, async () => (JSON.parse((await httpsGet(`${clientUrl}/health`, tls)).body).health === 'true' ? true : undefined), 30_000, `see ${opts.logFile}`);
  } else {
    await waitFor(
      `etcd ${opts.name} at ${clientUrl}`,
      async () => {
        const res = await fetch(`${clientUrl}/health`);
        const body = (await res.json()) as { health?: string };
        return body.health === 'true' ? true : undefined;
      },
      30_000,
      `see ${opts.logFile}`,
    );
  }
  return { pid, clientUrl };
}

export const etcdDataDir = (clusterDir: string, which: 'kube' | 'mesh') => join(clusterDir, `etcd-${which}`);
