import { describe, expect, it } from 'vitest';
import { agentEjectedAt, publishesEjections } from './ejection.js';

const at = (ms: number) => new Date(1_000_000 + ms).toISOString();

describe('agentEjectedAt', () => {
  // As datapath/agent/agent.ts publishes it: a flat list of PROTO/ip:port with since/until.
  const view = {
    node: 'east-node-1',
    ejected: [
      { backend: 'TCP/10.1.1.5:8080', service: 'default/echo', since: at(120), until: at(30_120), failures: 3, ejections: 1 },
      { backend: 'TCP/10.1.2.7:8080', service: 'default/echo', since: at(180), until: at(30_180), failures: 3, ejections: 1 },
      { backend: 'UDP/10.1.2.8:8080', since: at(90), until: at(30_090), failures: 3, ejections: 1 },
    ],
  };

  it('is the moment the last faulted backend was ejected, for the frontend protocol', () => {
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5', '10.1.2.7']))).toBe(1_000_180);
    expect(agentEjectedAt(view, 'UDP/100.64.0.10:80', new Set(['10.1.1.5']))).toBeUndefined();
    expect(agentEjectedAt(view, 'UDP/100.64.0.10:80', new Set(['10.1.2.8']))).toBe(1_000_090);
  });

  it('is undefined while one faulted backend is still in use, or was ejected before the fault', () => {
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5', '10.1.3.3']))).toBeUndefined();
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5']), 1_000_150)).toBeUndefined();
  });

  it('reads per-frontend maps too, and tells an agent that publishes no ejections', () => {
    const byFrontend = { ejected: { 'TCP/100.64.0.10:80': { '10.1.1.5:8080': { since: at(50) } } } };
    expect(agentEjectedAt(byFrontend, 'TCP/100.64.0.10:80', new Set(['10.1.1.5']))).toBe(1_000_050);
    expect(publishesEjections(byFrontend)).toBe(true);
    expect(publishesEjections({ node: 'n', programmed: {} })).toBe(false);
    expect(agentEjectedAt({ node: 'n' }, 'TCP/100.64.0.10:80', new Set(['10.1.1.5']))).toBeUndefined();
  });
});
