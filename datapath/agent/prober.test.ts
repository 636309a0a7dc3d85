import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Prober, tcpConnectProbe } from './prober.js';
import type { ProbeOutcome } from './outliers.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function listening(): Promise<number> {
  const s = createServer((sock) => sock.destroy());
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
}

describe('tcpConnectProbe (loopback)', () => {
  it('ok when something accepts, refused when nothing listens', async () => {
    const port = await listening();
    expect(await tcpConnectProbe('127.0.0.1', port, 1000)).toBe('ok');
    const closed = await listening();
    servers.pop()!.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(await tcpConnectProbe('127.0.0.1', closed, 1000)).toBe('refused');
  });
});

describe('Prober', () => {
  it('never has more than maxInFlight probes at once, and reports each start and end', async () => {
    const pending: ((outcome: ProbeOutcome) => void)[] = [];
    const targets: string[] = [];
    const p = new Prober({ timeoutMs: 200, maxInFlight: 3, now: () => 7, connect: (ip, port) => (targets.push(`${ip}:${port}`), new Promise((r) => pending.push(r))) });
    const starts: string[] = [];
    const ends: [string, ProbeOutcome][] = [];
    const n = p.run(new Map([['TCP/10.1.1.2:8080', 2], ['TCP/10.1.1.3:8080', 2], ['UDP/10.1.1.4:53', 1]]), (k) => starts.push(k), (k, ok) => ends.push([k, ok]));
    expect(n).toBe(3);
    expect(targets).toEqual(['10.1.1.2:8080', '10.1.1.2:8080', '10.1.1.3:8080']);
    expect(p.run(new Map([['TCP/10.1.1.5:80', 1]]), () => {}, () => {})).toBe(0); // full
    pending.shift()!('failed');
    await new Promise((r) => setImmediate(r));
    expect(ends).toEqual([['TCP/10.1.1.2:8080', 'failed']]);
    expect(p.probing).toBe(2);
    expect(p.run(new Map([['TCP/10.1.1.5:80', 1]]), () => {}, () => {})).toBe(1);
    expect(starts).toHaveLength(3);
  });
});
