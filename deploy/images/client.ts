// The client image: idles by default (a pod to exec into); `http|tcp|udp TARGET` sends a bounded stream of
// requests, each on a new socket so the socket load balancer chooses per request, and prints one JSON line
// per request: {seq, at, ok, ms, cluster, pod, error}.
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { connect } from 'node:net';
import { parseArgs } from 'node:util';
import { EchoIdentity } from './identity.js';
import type { Outcome } from './outcome.js';

const MAX_COUNT = 1_000_000;

function splitHostPort(target: string): { host: string; port: number } {
  const m = /^([^:]+):(\d+)$/.exec(target);
  if (!m) throw new Error(`target "${target}": expected HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

function identify(text: string): Pick<Outcome, 'cluster' | 'pod'> {
  const parsed = EchoIdentity.partial().safeParse(JSON.parse(text.split('\n')[0] ?? '{}'));
  return parsed.success ? { cluster: parsed.data.cluster, pod: parsed.data.pod } : {};
}

function once(proto: string, target: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error('timeout')), timeoutMs);
    let settled = false;
    const done = (err: Error | null, body?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      cleanup();
      if (err) reject(err);
      else resolve(body ?? '');
    };
    let cleanup = () => {};
    if (proto === 'http') {
      const req = request(target.startsWith('http') ? target : `http://${target}/`, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => done(res.statusCode === 200 ? null : new Error(`HTTP ${res.statusCode}`), body));
      });
      req.on('error', (e) => done(e));
      req.end();
      cleanup = () => req.destroy();
    } else if (proto === 'tcp') {
      const { host, port } = splitHostPort(target);
      const sock = connect({ host, port });
      let body = '';
      sock.setEncoding('utf8');
      sock.on('data', (c: string) => {
        body += c;
        if (body.includes('\n')) done(null, body);
      });
      sock.on('error', (e) => done(e));
      sock.on('end', () => done(new Error('closed before reply')));
      cleanup = () => sock.destroy();
    } else if (proto === 'udp') {
      const { host, port } = splitHostPort(target);
      const sock = createSocket('udp4');
      sock.on('message', (m) => done(null, m.toString('utf8')));
      sock.on('error', (e) => done(e));
      sock.send('ping', port, host);
      cleanup = () => sock.close();
    } else {
      done(new Error(`protocol "${proto}": expected http, tcp or udp`));
    }
  });
}

async function stream(proto: string, target: string, count: number, intervalMs: number, timeoutMs: number): Promise<void> {
  for (let seq = 0; seq < count; seq++) {
    const started = Date.now();
    const t0 = performance.now();
    let outcome: Outcome;
    try {
      const body = await once(proto, target, timeoutMs);
      outcome = { seq, at: started, ok: true, ms: +(performance.now() - t0).toFixed(3), ...identify(body) };
    } catch (err) {
      outcome = { seq, at: started, ok: false, ms: +(performance.now() - t0).toFixed(3), error: (err as Error).message };
    }
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    const wait = intervalMs - (Date.now() - started);
    if (wait > 0 && seq + 1 < count) await new Promise((r) => setTimeout(r, wait));
  }
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      count: { type: 'string', default: '1' },
      'interval-ms': { type: 'string', default: '0' },
      'timeout-ms': { type: 'string', default: '1000' },
    },
  });
  const [proto = 'idle', target] = positionals;
  if (proto === 'idle') {
    process.on('SIGTERM', () => process.exit(0));
    setInterval(() => {}, 1 << 30);
    return;
  }
  if (!target) throw new Error(`usage: client ${proto} TARGET [--count N] [--interval-ms MS] [--timeout-ms MS]`);
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > MAX_COUNT) throw new Error(`--count must be 1..${MAX_COUNT}`);
  await stream(proto, target, count, Number(values['interval-ms']), Number(values['timeout-ms']));
}

main().catch((err: Error) => {
  console.error(`client: ${err.message}`);
  process.exit(2);
});
