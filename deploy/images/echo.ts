// The echo server: answers HTTP on 8080, UDP on 8080 and raw TCP on 9000 with its pod, node and cluster.
// HTTP /healthz is its readiness endpoint; /fail and /recover flip it, for readiness-driven failover tests.
// DRAIN_MS: how long it keeps answering after SIGTERM (default 2000).
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { identityFromEnv } from './identity.js';

const id = identityFromEnv();
const httpPort = Number(process.env.HTTP_PORT ?? 8080);
const udpPort = Number(process.env.UDP_PORT ?? 8080);
const tcpPort = Number(process.env.TCP_PORT ?? 9000);
let healthy = true;

const http = createHttpServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain' }).end(healthy ? 'ok\n' : 'failing\n');
    return;
  }
  if (req.url === '/fail' || req.url === '/recover') healthy = req.url === '/recover';
  res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify({ ...id, proto: 'http', path: req.url })}\n`);
});
http.keepAliveTimeout = 5_000;
http.listen(httpPort, '0.0.0.0');

const udp = createSocket('udp4');
udp.on('message', (msg, rinfo) => {
  udp.send(`${JSON.stringify({ ...id, proto: 'udp', echo: msg.toString('utf8').slice(0, 512) })}\n`, rinfo.port, rinfo.address);
});
udp.bind(udpPort, '0.0.0.0');

const tcp = createTcpServer((sock) => {
  sock.write(`${JSON.stringify({ ...id, proto: 'tcp' })}\n`);
  sock.on('data', (d) => sock.write(d));
  sock.on('error', () => sock.destroy());
});
tcp.listen(tcpPort, '0.0.0.0');

// As a well-behaved server does: on SIGTERM fail readiness but keep answering for a drain period, so
// requests still routed here while the endpoint change propagates are served, then close.
const drainMs = Number(process.env.DRAIN_MS ?? 2000);
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  healthy = false;
  setTimeout(() => {
    http.close();
    udp.close();
    tcp.close();
    setTimeout(() => process.exit(0), 200).unref();
  }, drainMs).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log(`echo ${id.namespace}/${id.pod} on ${id.node} (${id.cluster}): http ${httpPort}, udp ${udpPort}, tcp ${tcpPort}`);
