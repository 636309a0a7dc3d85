import { describe, expect, it, vi } from 'vitest';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { keys } from '../../mesh/schema/keys.js';
import { GlobalService } from '../../mesh/schema/values.js';
import { StateWriter } from '../../mesh/state-writer.js';
import { createMetrics } from '../metrics.js';
import { ServiceExport } from './service-export.js';
import { MemoryKv, recordingEventsApi } from './test-fakes.js';
import { WarningEvents } from './warning-events.js';

const CLUSTER = 'east';

const service = (name: string, annotations: Record<string, string>, spec: V1Service['spec'] = {}): V1Service => ({
  metadata: { name, namespace: 'shop', uid: `uid-${name}`, resourceVersion: '7', annotations },
  spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', port: 80, protocol: 'TCP' }], ...spec },
});

type Endpoint = NonNullable<V1EndpointSlice['endpoints']>[number];
const slice = (name: string, svc: string, endpoints: Endpoint[]): V1EndpointSlice => ({
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
