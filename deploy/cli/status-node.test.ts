import { describe, expect, it } from 'vitest';
import { AgentView } from '../../mesh/schema/values.js';
import { renderNodeView } from './status.js';

const view = (over: Partial<AgentView> = {}): AgentView =>
  AgentView.parse({
    node: 'east-node-1',
    at: '2025-01-01T00:00:00.000Z',
    frontends: 1,
    backends: 1,
    reconciles: 3,
    lastReconcileMs: 0.2,
    programmed: { 'TCP/100.64.0.2:80': ['10.1.0.2:8080'] },
    truncated: false,
    ...over,
  });

describe('skein status --node', () => {
  it('lists the frontends the agent could not program, with reason, since, attempts and error', () => {
    const a = view({
      failing: { 'TCP/100.64.0.1:80': { service: 'default/big', reason: 'too-many-backends', error: 'TCP/100.64.0.1:80 has 70000 active backends; a frontend holds at most 65535', since: '2025-01-01T00:00:00.000Z', attempts: 4 } },
      failures: 3,
    });
    const out = renderNodeView('east', a);
    expect(out).toContain('FAILING 3: not programmed as wanted');
    expect(out).toMatch(/TCP\/100\.64\.0\.1:80\s+default\/big {2}too-many-backends since 2025-01-01T00:00:00\.000Z, 4 attempts: .*at most 65535/);
    expect(out).toContain('... 2 more failing not shown');
  });

  it('reads a view from an agent that publishes no failures (older agents)', () => {
    expect(renderNodeView('east', view())).not.toContain('FAILING');
    expect(renderNodeView('east', view())).not.toContain('EJECTED');
  });

  it('lists the backends outlier detection ejected, with service, failures and until when', () => {
    const a = view({ ejected: [{ backend: 'TCP/10.2.0.5:8080', service: 'default/echo', since: '2025-01-01T00:00:00.000Z', until: '2025-01-01T00:00:02.000Z', failures: 3, ejections: 2 }], ejectedCount: 1 });
    const out = renderNodeView('east', a);
    expect(out).toContain('EJECTED 1: backends this node saw fail');
    expect(out).toMatch(/TCP\/10\.2\.0\.5:8080\s+default\/echo {2}3 failures in a row, ejection #2, since 2025-01-01T00:00:00\.000Z until 2025-01-01T00:00:02\.000Z/);
  });
});
