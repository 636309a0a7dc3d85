// A watch the server cancels (its start revision compacted away) must be cancellable by its owner without
// killing the process. etcd3 1.1.2 forgets such a watch but keeps its id; a cancel sent for it is answered by
// etcd for an id the client no longer knows, and the client throws that from its stream handler. This is how
// a skein-apiserver died in CI when a peer's etcd was compacted while the peer was cut off. Each case runs
// in its own process against a real etcd: the crash is an uncaught exception.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cgroup2Root, destroyCgroup } from '../../testbed/cgroup.js';
import { startEtcd } from '../../testbed/etcd.js';
import { distPath } from '../../testbed/repo.js';

const dir = mkdtempSync(join(tmpdir(), 'skein-e2e-etcd-watch-'));
let cgroup = '';
let url = '';

/**
 * Compacts a fresh key's history, watches it from before the compaction, waits for the server's cancel, then
 * cancels. Another watch keeps the client's shared stream open (as the sync's config-key watch does): only
 * then does the server's answer to the cancel reach the client.
 */
const script = (cancel: 'raw' | 'openWatch', key: string) => `
import { Etcd3 } from 'etcd3';
import { openWatch } from ${JSON.stringify(distPath('mesh', 'etcd-watch.js'))};
const client = new Etcd3({ hosts: ${JSON.stringify(url)} });
await client.watch().key('/other').create();
const revisions = [];
for (let i = 0; i < 5; i++) revisions.push(Number((await client.put(${JSON.stringify(key)}).value(String(i)).exec()).header.revision));
await client.kv.compact({ revision: revisions[4], physical: true });
const first = revisions[0];
const watch = await openWatch(client, { prefix: ${JSON.stringify(key)} }, first);
const why = await new Promise((resolve) => watch.watcher.on('error', (err) => resolve(err.message)));
console.log('server cancelled: ' + why);
await ${cancel === 'raw' ? 'watch.watcher.cancel()' : 'watch.cancel()'};
// Give a late answer to the cancel time to arrive and crash us.
await new Promise((r) => setTimeout(r, 1500));
console.log('cancelled cleanly');
client.close();
process.exit(0);
`;

function run(code: string): Promise<{ rc: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: distPath('..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (rc) => {
      clearTimeout(timer);
      resolve({ rc, out });
    });
  });
}

describe('a watch the server cancelled after compaction', () => {
  beforeAll(async () => {
    cgroup = join(await cgroup2Root(), 'skein', `etcd-watch-${randomBytes(3).toString('hex')}`);
    url = (await startEtcd({ name: 'watch', dataDir: join(dir, 'data'), cgroup, logFile: join(dir, 'etcd.log') })).clientUrl;
  });

  afterAll(async () => {
    await destroyCgroup(cgroup);
    rmSync(dir, { recursive: true, force: true });
  });

  it('cancelled again through etcd3 alone kills the process (the hazard is real)', async () => {
    const { rc, out } = await run(script('raw', '/raw/'));
    expect(out).toContain('server cancelled');
    expect(out).toContain('Failed to find watcher for IWatchResponse');
    expect(rc).not.toBe(0);
  });

  it('cancelled through openWatch returns and the process lives on', async () => {
    const { rc, out } = await run(script('openWatch', '/safe/'));
    expect(out).toContain('server cancelled');
    expect(out).toContain('cancelled cleanly');
    expect(out).not.toContain('Failed to find watcher');
    expect(rc).toBe(0);
  });
});
