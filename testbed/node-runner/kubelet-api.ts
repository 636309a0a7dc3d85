// The part of the kubelet's HTTPS API that `kubectl logs` (and `skein drill`) reach through the API server:
// GET /containerLogs/<namespace>/<pod>/<container>[?follow=true&tailLines=N]. Only the API server's kubelet
// client certificate (signed by the cluster CA) is let in, as a kubelet with x509 authentication does.
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { ServerResponse } from 'node:http';

interface ContainerLog {
  file: string;
  running: () => boolean;
}

export interface KubeletApiOptions {
  host: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  findLog: (namespace: string, pod: string, container: string) => ContainerLog | undefined;
}

const FOLLOW_POLL_MS = 50;

/** The byte offset where the last `lines` lines of the file start. */
function tailOffset(file: string, lines: number): number {
  const text = readFileSync(file);
  let seen = 0;
  for (let i = text.length - 2; i >= 0; i--) {
    if (text[i] === 0x0a && ++seen === lines) return i + 1;
  }
  return 0;
}

function follow(res: ServerResponse, log: ContainerLog, from: number): void {
  let offset = from;
  let reading = false;
  const pump = () => {
    if (reading || res.destroyed) return;
    const size = existsSync(log.file) ? statSync(log.file).size : 0;
    if (size <= offset) {
      if (!log.running()) finish();
      return;
    }
    reading = true;
    const stream = createReadStream(log.file, { start: offset, end: size - 1 });
    stream.on('data', (chunk) => res.write(chunk));
    stream.on('end', () => {
      offset = size;
      reading = false;
    });
    stream.on('error', () => finish());
  };
  const timer = setInterval(pump, FOLLOW_POLL_MS);
  const finish = () => {
    clearInterval(timer);
    res.end();
  };
  res.on('close', () => clearInterval(timer));
  pump();
}

export function startKubeletApi(opts: KubeletApiOptions): Promise<{ server: Server; port: number }> {
  const server = createServer(
    { cert: readFileSync(opts.certFile), key: readFileSync(opts.keyFile), ca: readFileSync(opts.caFile), requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const url = new URL(req.url ?? '/', 'https://kubelet');
      const m = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url.pathname);
      if (req.method !== 'GET' || !m) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`${url.pathname}: this node runner serves only GET /containerLogs/<namespace>/<pod>/<container>\n`);
        return;
      }
      const [ns, pod, container] = m.slice(1).map(decodeURIComponent) as [string, string, string];
      const log = opts.findLog(ns, pod, container);
      if (!log) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`container ${container} of pod ${ns}/${pod} is not on this node\n`);
        return;
      }
      const tail = url.searchParams.get('tailLines');
      const exists = existsSync(log.file);
      const from = exists && tail !== null ? tailOffset(log.file, Number(tail)) : 0;
      res.writeHead(200, { 'content-type': 'text/plain' });
      if (url.searchParams.get('follow') === 'true') return follow(res, log, from);
      if (!exists) return void res.end();
      createReadStream(log.file, { start: from }).pipe(res);
    },
  );
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, opts.host, () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}
