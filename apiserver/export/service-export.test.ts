import { describe, expect, it, vi } from 'vitest';
import type { EndpointSlice, Service } from '../../mesh/kube/objects.js';
import { keys } from '../../mesh/schema/keys.js';
import { GlobalService } from '../../mesh/schema/values.js';
import { StateWriter } from '../../mesh/state-writer.js';
import { createMetrics } from '../metrics.js';
import { ServiceExport } from './service-export.js';
import { MemoryKv, recordingEventsApi } from './test-fakes.js';
import { WarningEvents } from './warning-events.js';

const CLUSTER = 'east';

const service = (name: string, annotations: Record<string, string>, spec: Service['spec'] = {}): Service => ({
  metadata: { name, namespace: 'shop', uid: `uid-${name}`, resourceVersion: '7', annotations },
  spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], ...spec },
});

type Endpoint = NonNullable<EndpointSlice['endpoints']>[number];
const slice = (name: string, svc: string, endpoints: Endpoint[]): EndpointSlice => ({
  metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints,
});

function serviceExport() {
  const kv = new MemoryKv();
  const writer = new StateWriter(kv);
  writer.resume();
  const metrics = createMetrics();
  const log = { info: vi.fn(), warn: vi.fn() };
  const { rest, events } = recordingEventsApi();
  const services = new ServiceExport({ cluster: CLUSTER, writer, metrics, log, events: new WarningEvents(rest, CLUSTER, log) });
  const read = (key: string) => {
    const raw = kv.data.get(key);
    return raw === undefined ? undefined : GlobalService.parse(JSON.parse(raw));
  };
  const backends = async () => Object.fromEntries((await metrics.exportedBackends.get()).values.map((v) => [String(v.labels.ready), v.value]));
  return { services, writer, kv, metrics, log, events, read, backends };
}

describe('service export', () => {
  it('leaves a pod deleted from the API out at once, before its EndpointSlice is updated; another pod keeps its endpoint', async () => {
    const t = serviceExport();
    t.services.onService('add', service('cart', { 'skein.io/global': 'true' }));
    const ep = (ip: string, uid: string): Endpoint => ({ addresses: [ip], conditions: { ready: true }, targetRef: { kind: 'Pod', namespace: 'shop', name: uid, uid } });
    t.services.onSlice('add', slice('cart-a', 'cart', [ep('10.1.0.2', 'pod-a'), ep('10.1.0.3', 'pod-b')]));
    await t.writer.idle();
    const ips = () => t.read(keys.service(CLUSTER, 'shop', 'cart'))?.backends.map((b) => b.ip);
    expect(ips()).toEqual(['10.1.0.2', '10.1.0.3']);
    t.services.onPod('update', { metadata: { name: 'pod-a', namespace: 'shop', uid: 'pod-a' } }); // not a deletion
    t.services.onPod('delete', { metadata: { name: 'pod-x', namespace: 'shop', uid: 'pod-x' } }); // in no slice
    await t.writer.idle();
    expect(ips()).toEqual(['10.1.0.2', '10.1.0.3']);
    t.services.onPod('delete', { metadata: { name: 'pod-a', namespace: 'shop', uid: 'pod-a' } });
    await t.writer.idle();
    expect(ips()).toEqual(['10.1.0.3']);
    // The slice still lists it for a moment (the controller has not caught up): it stays out.
    t.services.onSlice('update', slice('cart-a', 'cart', [ep('10.1.0.2', 'pod-a'), ep('10.1.0.3', 'pod-b')]));
    await t.writer.idle();
    expect(ips()).toEqual(['10.1.0.3']);
    // Killed (grace 0): out from the deletion timestamp on, before the pod is removed.
    t.services.onPod('update', { metadata: { name: 'pod-b', namespace: 'shop', uid: 'pod-b', deletionTimestamp: new Date().toISOString(), deletionGracePeriodSeconds: 30 } }); // graceful: the slices say
    await t.writer.idle();
    expect(ips()).toEqual(['10.1.0.3']);
    t.services.onPod('update', { metadata: { name: 'pod-b', namespace: 'shop', uid: 'pod-b', deletionTimestamp: new Date().toISOString(), deletionGracePeriodSeconds: 0 } });
    await t.writer.idle();
    expect(ips()).toEqual([]);
    // Its IP taken by a new pod: that one is in.
    t.services.onSlice('update', slice('cart-a', 'cart', [ep('10.1.0.2', 'pod-c')]));
    await t.writer.idle();
    expect(ips()).toEqual(['10.1.0.2']);
  });

  it('exports a global service with every backend and its ready, serving and terminating conditions', async () => {
    const t = serviceExport();
    t.services.onService('add', service('cart', { 'skein.io/global': 'true', 'skein.io/affinity': 'local' }));
    t.services.onSlice('add', slice('cart-a', 'cart', [
      { addresses: ['10.1.0.2'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1', zone: 'z1' },
      { addresses: ['10.1.0.3'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'n2' },
    ]));
    // Unset conditions: ready, and serving as ready (EndpointSlice semantics).
    t.services.onSlice('add', slice('cart-b', 'cart', [{ addresses: ['10.1.0.10'] }, { addresses: ['10.1.0.4'], conditions: { ready: false } }]));
    await t.writer.idle();
    const value = t.read(keys.service(CLUSTER, 'shop', 'cart'));
    expect(value).toMatchObject({ cluster: CLUSTER, namespace: 'shop', name: 'cart', shared: true, affinity: 'local', clusterIps: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] });
    expect(value?.backends.map(({ ip, ready, serving, terminating }) => ({ ip, ready, serving, terminating }))).toEqual([
      { ip: '10.1.0.2', ready: true, serving: true, terminating: false },
      { ip: '10.1.0.3', ready: false, serving: true, terminating: true },
      { ip: '10.1.0.4', ready: false, serving: false, terminating: false },
      { ip: '10.1.0.10', ready: true, serving: true, terminating: false },
    ]);
    expect(value?.backends[0]).toMatchObject({ ports: { http: { port: 8080, protocol: 'TCP' } }, node: 'n1', zone: 'z1' });
    expect(t.kv.data.has(keys.localService(CLUSTER, 'shop', 'cart'))).toBe(false);
    expect(t.services.status()).toEqual([{ name: 'shop/cart', shared: true, affinity: 'local', backends: 4, readyBackends: 2 }]);
    expect(await t.backends()).toEqual({ true: 2, false: 2 });

    // A slice going away takes its backends along; the service going away takes the key.
    t.services.onSlice('delete', slice('cart-b', 'cart', []));
    await t.writer.idle();
    expect(t.read(keys.service(CLUSTER, 'shop', 'cart'))?.backends.map((b) => b.ip)).toEqual(['10.1.0.2', '10.1.0.3']);
    t.services.onService('delete', service('cart', {}));
    await t.writer.idle();
    expect([...t.kv.data.keys()]).toEqual([]);
    expect(t.services.count).toBe(0);
    expect((await t.metrics.exportedServices.get()).values[0]?.value).toBe(0);
  });

  it('carries skein.io/local-min-ready in the exported value (absent when unset: the bytes of older versions), and keeps it through a typo', async () => {
    const t = serviceExport();
    const key = keys.service(CLUSTER, 'shop', 'cart');
    const annotations = { 'skein.io/global': 'true', 'skein.io/affinity': 'local' };
    t.services.onService('add', service('cart', annotations));
    t.services.onSlice('add', slice('cart-a', 'cart', [{ addresses: ['10.1.0.2'] }]));
    await t.writer.idle();
    expect(t.kv.data.get(key)).not.toContain('localMinReady');

    t.services.onService('update', service('cart', { ...annotations, 'skein.io/local-min-ready': '50%' }));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ affinity: 'local', localMinReady: { percent: 50 } });
    expect(JSON.parse(t.kv.data.get(key)!)).toMatchObject({ affinity: 'local', localMinReady: { percent: 50 } });

    // A typo in it keeps the last good settings, this one included, and says so.
    t.services.onService('update', service('cart', { ...annotations, 'skein.io/local-min-ready': '0' }));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ localMinReady: { percent: 50 } });
    expect(t.events.at(-1)!.message).toContain('skein.io/local-min-ready: "0" is not allowed');

    t.services.onService('update', service('cart', { ...annotations, 'skein.io/local-min-ready': '3' }));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ localMinReady: { count: 3 } });
  });

  it('keeps a non-global service local (for this cluster\'s agents) and skips ExternalName and headless ones', async () => {
    const t = serviceExport();
    t.services.onService('add', service('db', {}));
    t.services.onSlice('add', slice('db-a', 'db', [{ addresses: ['10.1.0.7'] }]));
    t.services.onService('add', service('ext', { 'skein.io/global': 'true' }, { type: 'ExternalName', externalName: 'example.com', clusterIP: undefined, clusterIPs: undefined }));
    t.services.onService('add', service('headless', {}, { clusterIP: 'None', clusterIPs: ['None'] }));
    await t.writer.idle();
    expect([...t.kv.data.keys()]).toEqual([keys.localService(CLUSTER, 'shop', 'db')]);
    expect(t.read(keys.localService(CLUSTER, 'shop', 'db'))).toMatchObject({ shared: false, affinity: 'none', backends: [{ ip: '10.1.0.7', ready: true }] });
    expect(t.services.count).toBe(0);

    // Made global: it moves from the local prefix to the export.
    t.services.onService('update', service('db', { 'service.cilium.io/global': 'true' }));
    await t.writer.idle();
    expect([...t.kv.data.keys()]).toEqual([keys.service(CLUSTER, 'shop', 'db')]);
  });

  it('does not export a service with a bad annotation: one Warning Event per bad value, a metric and a log line', async () => {
    const t = serviceExport();
    const bad = service('cart', { 'skein.io/global': 'yes' });
    t.services.onService('add', bad);
    t.services.onService('update', bad); // a resync: no second Event
    await t.writer.idle();
    expect(t.kv.data.has(keys.service(CLUSTER, 'shop', 'cart'))).toBe(false);
    // Kubernetes still serves it, so this cluster's agents do too.
    expect(t.kv.data.has(keys.localService(CLUSTER, 'shop', 'cart'))).toBe(true);
    const error = 'skein.io/global: "yes" is not allowed; use "true" or "false"';
    expect(t.events).toEqual([
      {
        path: '/api/v1/namespaces/shop/events',
        metadata: { generateName: 'cart.skein-', namespace: 'shop' },
        involvedObject: { kind: 'Service', apiVersion: 'v1', namespace: 'shop', name: 'cart', uid: 'uid-cart', resourceVersion: '7' },
        reason: 'InvalidSkeinAnnotation',
        message: `not exported to the mesh: ${error}`,
        type: 'Warning',
        source: { component: 'skein-apiserver' },
        reportingComponent: 'skein-apiserver',
        reportingInstance: CLUSTER,
        firstTimestamp: expect.any(String),
        lastTimestamp: expect.any(String),
        count: 1,
      },
    ]);
    expect((await t.metrics.invalidAnnotations.get()).values[0]?.value).toBe(1);
    expect(t.log.warn).toHaveBeenCalledWith({ service: 'shop/cart', annotation: 'skein.io/global' }, `service not exported: ${error}`);

    // Another bad value is reported again; fixing it exports the service.
    t.services.onService('update', service('cart', { 'skein.io/global': 'true', 'skein.io/affinity': 'nearest' }));
    expect(t.events.map((e) => e.message)).toEqual([`not exported to the mesh: ${error}`, expect.stringContaining('skein.io/affinity: "nearest" is not allowed')]);
    t.services.onService('update', service('cart', { 'skein.io/global': 'true' }));
    await t.writer.idle();
    expect([...t.kv.data.keys()]).toEqual([keys.service(CLUSTER, 'shop', 'cart')]);
  });

  it('logs, and goes on, when the Event cannot be recorded', async () => {
    const log = { info: vi.fn(), warn: vi.fn() };
    const events = new WarningEvents({ post: () => Promise.reject(new Error('forbidden')) }, CLUSTER, log);
    const services = new ServiceExport({ cluster: CLUSTER, writer: new StateWriter(new MemoryKv()), metrics: createMetrics(), log, events });
    services.onService('add', service('cart', { 'skein.io/shared': 'maybe' }));
    await vi.waitFor(() => expect(log.warn).toHaveBeenCalledWith({ err: 'forbidden', reason: 'InvalidSkeinAnnotation' }, 'could not record the Event'));
  });
});

describe('global services that program nothing', () => {
  it('posts one SkeinNotProgrammed Event for a headless global service, exports its endpoints, and says so in status', async () => {
    const t = serviceExport();
    const headless = service('db', { 'skein.io/global': 'true' }, { clusterIP: 'None', clusterIPs: ['None'] });
    t.services.onService('add', headless);
    t.services.onSlice('add', slice('db-a', 'db', [{ addresses: ['10.1.0.7'] }]));
    t.services.onService('update', headless); // a resync
    t.services.onSlice('update', slice('db-a', 'db', [{ addresses: ['10.1.0.7'] }, { addresses: ['10.1.0.8'] }]));
    await t.writer.idle();
    expect(t.events.map((e) => [e.reason, e.type, e.involvedObject.name])).toEqual([['SkeinNotProgrammed', 'Warning', 'db']]);
    expect(t.events[0]!.message).toMatch(/^global service is headless \(clusterIP: None\).*nothing is programmed.*recreate it without clusterIP: None/);
    // Still exported: other clusters' twins with a ClusterIP may use its endpoints; nothing here has a frontend.
    expect(t.read(keys.service(CLUSTER, 'shop', 'db'))).toMatchObject({ clusterIps: [], backends: [{ ip: '10.1.0.7' }, { ip: '10.1.0.8' }] });
    expect(t.services.status()[0]!.warning).toMatch(/^global service is headless/);
    expect(t.log.warn).toHaveBeenCalledWith({ service: 'shop/db', cause: 'headless' }, expect.stringContaining('headless'));
  });

  it('posts one Event for a port-less global service, none once it has ports, and one again if it loses them', async () => {
    const t = serviceExport();
    const portless = service('cart', { 'skein.io/global': 'true' }, { ports: [] });
    t.services.onService('add', portless);
    t.services.onService('update', portless);
    expect(t.events.map((e) => e.reason)).toEqual(['SkeinNotProgrammed']);
    expect(t.events[0]!.message).toMatch(/has no ports \(spec.ports is empty\).*Add the ports clients connect to under spec.ports/);

    t.services.onService('update', service('cart', { 'skein.io/global': 'true' }));
    expect(t.services.status()[0]!.warning).toBeUndefined();
    t.services.onService('update', portless);
    expect(t.events.map((e) => e.reason)).toEqual(['SkeinNotProgrammed', 'SkeinNotProgrammed']);

    // Not global: no Event (it is not Skein's to program).
    t.services.onService('add', service('other', {}, { ports: [] }));
    t.services.onService('add', service('sctp', { 'skein.io/global': 'true' }, { ports: [{ name: 's', port: 9, protocol: 'SCTP' }] }));
    expect(t.events.map((e) => e.message).slice(2)).toEqual([expect.stringMatching(/only SCTP ports/)]);
  });
});

describe('a bad annotation on a service already exported', () => {
  const good = { 'skein.io/global': 'true', 'skein.io/affinity': 'local' };

  it('keeps the last good export with one Event naming annotation, value and accepted values; a fix resumes the export', async () => {
    const t = serviceExport();
    t.services.onService('add', service('cart', good));
    t.services.onSlice('add', slice('cart-a', 'cart', [{ addresses: ['10.1.0.2'] }]));
    await t.writer.idle();
    const key = keys.service(CLUSTER, 'shop', 'cart');
    const before = t.kv.data.get(key);
    const writes = t.writer.writes;

    const typo = service('cart', { ...good, 'skein.io/affinity': 'locl' });
    t.services.onService('update', typo);
    t.services.onService('update', typo); // a resync: no second Event
    await t.writer.idle();
    expect(t.kv.data.get(key)).toBe(before); // not deleted, not changed
    expect(t.writer.writes).toBe(writes);
    expect(t.kv.data.has(keys.localService(CLUSTER, 'shop', 'cart'))).toBe(false);
    expect(t.events).toHaveLength(1);
    expect(t.events[0]).toMatchObject({ reason: 'InvalidSkeinAnnotation', type: 'Warning', involvedObject: { name: 'cart', uid: 'uid-cart' } });
    expect(t.events[0]!.message).toBe(
      'still exported to the mesh with its last good annotations (shared "true", affinity "local") until this is fixed: skein.io/affinity: "locl" is not allowed; use "local", "remote" or "none". ' +
        'To withdraw the service from the mesh instead, remove the global annotation or set it to "false"',
    );
    expect(t.services.status()[0]).toMatchObject({ affinity: 'local', warning: expect.stringContaining('skein.io/affinity: "locl"') });
    expect((await t.metrics.invalidAnnotations.get()).values[0]?.value).toBe(1);

    // The kept export still follows its endpoints: it must not point at pods long gone.
    t.services.onSlice('update', slice('cart-a', 'cart', [{ addresses: ['10.1.0.9'] }]));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ affinity: 'local', backends: [{ ip: '10.1.0.9' }] });

    // A typo in the global annotation itself is a typo too.
    t.services.onService('update', service('cart', { ...good, 'skein.io/global': 'ture' }));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ affinity: 'local' });
    expect(t.events.map((e) => e.message)).toEqual([expect.anything(), expect.stringContaining('skein.io/global: "ture" is not allowed; use "true" or "false"')]);

    // Fixed: the new settings apply, no Event, no warning.
    t.services.onService('update', service('cart', { ...good, 'skein.io/affinity': 'remote' }));
    await t.writer.idle();
    expect(t.read(key)).toMatchObject({ affinity: 'remote', backends: [{ ip: '10.1.0.9' }] });
    expect(t.events).toHaveLength(2);
    expect(t.services.status()[0]!.warning).toBeUndefined();
  });

  it('still unexports when the global annotation is removed or "false", whatever else is bad', async () => {
    const t = serviceExport();
    t.services.onService('add', service('cart', good));
    t.services.onService('add', service('web', good));
    await t.writer.idle();
    t.services.onService('update', service('cart', { 'skein.io/affinity': 'locl' }));
    t.services.onService('update', service('web', { 'skein.io/global': 'false', 'skein.io/shared': 'maybe' }));
    await t.writer.idle();
    expect(t.kv.data.has(keys.service(CLUSTER, 'shop', 'cart'))).toBe(false);
    expect(t.kv.data.has(keys.service(CLUSTER, 'shop', 'web'))).toBe(false);
    expect(t.kv.data.has(keys.localService(CLUSTER, 'shop', 'cart'))).toBe(true); // served locally, as any non-global service
    expect(t.events.map((e) => e.message)).toEqual([expect.stringMatching(/^not exported to the mesh: skein.io\/affinity/), expect.stringMatching(/^not exported to the mesh: skein.io\/shared/)]);
    expect(t.services.count).toBe(0);
  });

  it('after a restart keeps the last good export the mesh etcd holds instead of pruning it; a service never exported stays out', async () => {
    const before = serviceExport();
    before.services.onService('add', service('cart', good));
    before.services.onSlice('add', slice('cart-a', 'cart', [{ addresses: ['10.1.0.2'] }]));
    before.services.onService('add', service('gone', good));
    await before.writer.idle();
    const key = keys.service(CLUSTER, 'shop', 'cart');
    const lastGood = before.kv.data.get(key);

    // A new process over the same etcd, while cart's annotation turned bad and gone stopped being global.
    const kv = before.kv;
    const writer = new StateWriter(kv);
    await writer.load([keys.kindPrefix(CLUSTER, 'services'), keys.localServicesPrefix(CLUSTER)]);
    const log = { info: vi.fn(), warn: vi.fn() };
    const { rest, events } = recordingEventsApi();
    const reads: string[] = [];
    const services = new ServiceExport({
      cluster: CLUSTER,
      writer,
      metrics: createMetrics(),
      log,
      events: new WarningEvents(rest, CLUSTER, log),
      lastExported: async (k) => (reads.push(k), kv.data.get(k)),
    });
    services.onService('add', service('cart', { ...good, 'skein.io/affinity': 'locl' }));
    services.onSlice('add', slice('cart-a', 'cart', [{ addresses: ['10.1.0.2'] }]));
    services.onService('add', service('gone', {}));
    services.onService('add', service('new', { 'skein.io/global': 'true', 'skein.io/affinity': 'locl' }));
    expect(events).toEqual([]); // not before it is known whether a last good export survives
    await services.settled();
    writer.pruneUnder(keys.kindPrefix(CLUSTER, 'services'));
    writer.pruneUnder(keys.localServicesPrefix(CLUSTER));
    writer.resume();
    await writer.idle();

    expect(kv.data.get(key)).toBe(lastGood);
    expect(kv.data.has(keys.service(CLUSTER, 'shop', 'gone'))).toBe(false);
    expect(kv.data.has(keys.service(CLUSTER, 'shop', 'new'))).toBe(false);
    expect(services.count).toBe(1);
    expect(events.map((e) => [e.involvedObject.name, e.message.slice(0, 40)])).toEqual([
      ['cart', 'still exported to the mesh with its last'],
      ['new', 'not exported to the mesh: skein.io/affin'],
    ]);
    expect(reads.sort()).toEqual([key, keys.service(CLUSTER, 'shop', 'new')]);

    // After the initial sync every export is this process's own: a later typo needs no read.
    services.onService('add', service('late', { 'skein.io/global': 'ture' }));
    expect(reads).toHaveLength(2);
    // And the fix resumes the normal export.
    services.onService('update', service('cart', good));
    await writer.idle();
    expect(JSON.parse(kv.data.get(key)!)).toMatchObject({ affinity: 'local' });
  });
});
