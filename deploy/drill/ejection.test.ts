import { describe, expect, it } from 'vitest';
import { AgentView } from '../../mesh/schema/values.js';
import { agentEjectedAt, publishesEjections } from './ejection.js';

const at = (ms: number) => new Date(1_000_000 + ms).toISOString();
const base = { node: 'east-node-1', at: at(0), frontends: 1, backends: 2, reconciles: 1, lastReconcileMs: 0.1, programmed: {}, truncated: false };

describe('agentEjectedAt', () => {
  // As datapath/agent/agent.ts publishes it: PROTO/ip:port with since/until.
  const view = AgentView.parse({
    ...base,
    ejected: [
      { backend: 'TCP/10.1.1.5:8080', service: 'default/echo', since: at(120), until: at(30_120), failures: 3, ejections: 1 },
      { backend: 'TCP/10.1.2.7:8080', service: 'default/echo', since: at(180), until: at(30_180), failures: 3, ejections: 1 },
      { backend: 'UDP/10.1.2.8:8080', since: at(90), until: at(30_090), failures: 3, ejections: 1 },
    ],
  });

  it('is the moment the last faulted backend was ejected, for the frontend protocol', () => {
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5', '10.1.2.7']))).toBe(1_000_180);
    expect(agentEjectedAt(view, 'UDP/100.64.0.10:80', new Set(['10.1.1.5']))).toBeUndefined();
    expect(agentEjectedAt(view, 'UDP/100.64.0.10:80', new Set(['10.1.2.8']))).toBe(1_000_090);
  });

  it('is undefined while one faulted backend is still in use, or was ejected before the fault', () => {
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5', '10.1.3.3']))).toBeUndefined();
    expect(agentEjectedAt(view, 'TCP/100.64.0.10:80', new Set(['10.1.1.5']), 1_000_150)).toBeUndefined();
  });

  it('tells an agent that publishes no ejections', () => {
    const old = AgentView.parse(base);
    expect(publishesEjections(view)).toBe(true);
    expect(publishesEjections(old)).toBe(false);
    expect(agentEjectedAt(old, 'TCP/100.64.0.10:80', new Set(['10.1.1.5']))).toBeUndefined();
  });
});
