// One etcd member (Debian's etcd-server 3.4) on loopback: the Kubernetes store and the mesh store.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnDaemon, waitFor } from './daemon.js';
import { httpsGet } from './https.js';
import { freePort } from './ports.js';

const ETCD_BIN = process.env.SKEIN_ETCD_BIN ?? '/usr/bin/etcd';

export interface EtcdTls {
  certFile: string;
  keyFile: string;
  trustedCaFile: string;
}

export interface StartedEtcd {
  pid: number;
  clientUrl: string;
}

export async function startEtcd(opts: { name: string; dataDir: string; cgroup: string; logFile: string; tls?: EtcdTls; host?: string; argvFile?: string }): Promise<StartedEtcd> {
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
  if (opts.argvFile) writeFileSync(opts.argvFile, JSON.stringify({ argv: args, cgroup: opts.cgroup, logFile: opts.logFile, clientUrl, tls: opts.tls }));
  const pid = spawnDaemon({ cgroup: opts.cgroup, logFile: opts.logFile, argv: args });
  await waitHealthy(opts.name, clientUrl, opts.logFile, opts.tls);
  return { pid, clientUrl };
}

/** Starts an etcd again exactly as before (same ports, data, certificates): a remote cluster coming back. */
export async function restartEtcd(argvFile: string): Promise<void> {
  const saved = JSON.parse(readFileSync(argvFile, 'utf8')) as { argv: string[]; cgroup: string; logFile: string; clientUrl: string; tls?: EtcdTls };
  spawnDaemon({ cgroup: saved.cgroup, logFile: saved.logFile, argv: saved.argv });
  await waitHealthy('etcd', saved.clientUrl, saved.logFile, saved.tls);
}

export function etcdCgroup(argvFile: string): string {
  return (JSON.parse(readFileSync(argvFile, 'utf8')) as { cgroup: string }).cgroup;
}

async function waitHealthy(name: string, clientUrl: string, logFile: string, tlsFiles?: EtcdTls): Promise<void> {
  const tls = tlsFiles && { ca: readFileSync(tlsFiles.trustedCaFile, 'utf8'), cert: readFileSync(tlsFiles.certFile, 'utf8'), key: readFileSync(tlsFiles.keyFile, 'utf8') };
  const health = async () => (tls ? (await httpsGet(`${clientUrl}/health`, tls)).body : await (await fetch(`${clientUrl}/health`)).text());
  await waitFor(`etcd ${name} at ${clientUrl}`, async () => ((JSON.parse(await health()) as { health?: string }).health === 'true' ? true : undefined), 30_000, `see ${logFile}`);
}

export const etcdDataDir = (clusterDir: string, which: 'kube' | 'mesh') => join(clusterDir, `etcd-${which}`);
