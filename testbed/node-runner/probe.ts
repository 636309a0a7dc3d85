// Readiness probes as the kubelet runs them: tcpSocket, httpGet (2xx/3xx), exec (exit 0 inside the pod).
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import type { V1Container, V1Probe } from '@kubernetes/client-node';

function resolvePort(container: V1Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  if (port === undefined) return undefined;
  if (/^\d+$/.test(port)) return Number(port);
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

export function runProbe(probe: V1Probe, container: V1Container, podIp: string, podNetns: string): Promise<boolean> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  if (probe.tcpSocket) {
    const port = resolvePort(container, probe.tcpSocket.port);
    return new Promise((resolve) => {
      const sock = connect({ host: podIp, port: port ?? 0, timeout: timeoutMs });
      const end = (ok: boolean) => {
        sock.destroy();
        resolve(ok);
      };
      sock.on('connect', () => end(true));
      sock.on('timeout', () => end(false));
      sock.on('error', () => end(false));
    });
  }
  if (probe.httpGet) {
    const port = resolvePort(container, probe.httpGet.port);
    return new Promise((resolve) => {
      const req = request({ host: podIp, port, path: probe.httpGet!.path ?? '/', timeout: timeoutMs, agent: false }, (res) => {
        res.resume();
        resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
  }
  if (probe.exec?.command?.length) {
    return new Promise((resolve) => {
      const child = spawn('ip', ['netns', 'exec', podNetns, ...probe.exec!.command!], { stdio: 'ignore', timeout: timeoutMs });
      child.on('exit', (code) => resolve(code === 0));
      child.on('error', () => resolve(false));
    });
  }
  return Promise.resolve(true);
}
