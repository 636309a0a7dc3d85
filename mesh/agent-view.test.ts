import { describe, expect, it } from 'vitest';
import { AGENT_VIEW_SHARDS, agentShardOf, agentShards, AgentViews } from './agent-view.js';
import { keys } from './schema/keys.js';
import { AgentFrontendShard, AgentView, encodeValue } from './schema/values.js';

const C = 'east';
const frontend = (i: number) => `TCP/100.65.${i >> 8}.${i & 255}:80`;
const header = (node: string, over: Partial<AgentView> = {}): string =>
  encodeValue(AgentView, { node, at: '2026-01-01T00:00:00.000Z', frontends: 0, backends: 0, reconciles: 1, lastReconcileMs: 1, programmed: {}, truncated: false, shards: AGENT_VIEW_SHARDS, ...over });

/** Publishes `n` frontends of `node` as the agent does: every shard, then the header. */
function publish(views: AgentViews, node: string, n: number, backend = (i: number) => [`10.1.${i >> 8}.${i & 255}:8080`]): void {
  for (const [i, shard] of agentShards(node, Array.from({ length: n }, (_, i) => [frontend(i), backend(i)] as const))) views.apply(keys.agentFrontends(C, node, i), encodeValue(AgentFrontendShard, shard));
  views.apply(keys.agent(C, node), header(node, { frontends: n }));
}

describe('agent view shards', () => {
  it('puts a frontend in the same shard every time, and spreads 10,000 of them over every shard', () => {
    expect(agentShardOf('TCP/100.64.0.10:80')).toBe(agentShardOf('TCP/100.64.0.10:80'));
    // FNV-1a of a fixed text (computed independently with the reference algorithm): a change to the hash would scatter every published view, so it is pinned.
    expect(agentShardOf('TCP/100.64.0.10:80')).toBe(0x836a566d % AGENT_VIEW_SHARDS);
    const counts = new Array<number>(AGENT_VIEW_SHARDS).fill(0);
    for (let i = 0; i < 10_000; i++) counts[agentShardOf(frontend(i))]!++;
    expect(Math.min(...counts)).toBeGreaterThan(10_000 / AGENT_VIEW_SHARDS / 2);
    expect(Math.max(...counts)).toBeLessThan((10_000 / AGENT_VIEW_SHARDS) * 2);
  });

  it('assembles a node of 10,000 frontends whole, and caps a listing at the first ones sorted', () => {
    const views = new AgentViews(C);
    publish(views, 'node-1', 10_000);
    const whole = views.view('node-1')!;
    expect(Object.keys(whole.programmed)).toHaveLength(10_000);
    expect(whole.programmed[frontend(9_999)]).toEqual(['10.1.39.15:8080']);
    expect(whole.truncated).toBe(false);
    const [capped] = views.views(500);
    expect(Object.keys(capped!.programmed)).toEqual(Object.keys(whole.programmed).sort().slice(0, 500));
    expect(capped!.truncated).toBe(true);
    expect(views.usersOf(frontend(9_999))).toEqual([['node-1', ['10.1.39.15:8080']]]);
  });

  it('a shard that disappears takes only its frontends with it, from the view and from who-uses-what', () => {
    const views = new AgentViews(C);
    publish(views, 'node-1', 300);
    publish(views, 'node-2', 300);
    const lost = agentShardOf(frontend(7));
    const inLost = Array.from({ length: 300 }, (_, i) => frontend(i)).filter((f) => agentShardOf(f) === lost);
    expect(views.apply(keys.agentFrontends(C, 'node-1', lost), undefined)).toBe(true);
    const v = views.view('node-1')!;
    expect(Object.keys(v.programmed)).toHaveLength(300 - inLost.length);
    for (const f of inLost) {
      expect(v.programmed[f]).toBeUndefined();
      expect(views.usersOf(f).map(([n]) => n)).toEqual(['node-2']);
    }
    expect(views.usersOf(frontend(8)).map(([n]) => n).sort()).toEqual(agentShardOf(frontend(8)) === lost ? ['node-2'] : ['node-1', 'node-2']);
    // Deleting it again changes nothing.
    expect(views.apply(keys.agentFrontends(C, 'node-1', lost), undefined)).toBe(false);
  });

  it("a node whose header is gone (its lease expired) is no one's user, even before its shards' deletes arrive", () => {
    const views = new AgentViews(C);
    publish(views, 'node-1', 10);
    views.apply(keys.agent(C, 'node-1'), undefined);
    expect(views.nodes()).toEqual([]);
    expect(views.usersOf(frontend(3))).toEqual([]);
    expect(views.view('node-1')).toBeUndefined();
  });

  it("refuses a shard whose value names another node or shard than its key, and a malformed one", () => {
    const views = new AgentViews(C);
    publish(views, 'node-1', 0);
    const shard = agentShardOf(frontend(1));
    const forged = encodeValue(AgentFrontendShard, { node: 'node-2', shard, programmed: { [frontend(1)]: ['10.9.9.9:1'] }, omitted: 0 });
    expect(views.apply(keys.agentFrontends(C, 'node-1', shard), forged)).toBe(false);
    expect(views.apply(keys.agentFrontends(C, 'node-1', shard + 1), encodeValue(AgentFrontendShard, { node: 'node-1', shard, programmed: { [frontend(1)]: ['10.9.9.9:1'] }, omitted: 0 }))).toBe(false);
    expect(views.apply(keys.agentFrontends(C, 'node-1', shard), '{"node":"node-1"')).toBe(false);
    expect(views.usersOf(frontend(1))).toEqual([]);
  });

  it('keeps a shard within its byte budget: what does not fit is counted and the view says truncated', () => {
    const shards = agentShards('node-1', Array.from({ length: 100 }, (_, i) => [frontend(i), ['10.0.0.1:1']] as const), 1, 1_000);
    const only = shards.get(0)!;
    expect(Object.keys(only.programmed).length + only.omitted).toBe(100);
    expect(only.omitted).toBeGreaterThan(0);
    expect(encodeValue(AgentFrontendShard, only).length).toBeLessThan(1_000);
    const views = new AgentViews(C);
    views.apply(keys.agentFrontends(C, 'node-1', 0), encodeValue(AgentFrontendShard, only));
    views.apply(keys.agent(C, 'node-1'), header('node-1', { shards: 1, frontends: 100 }));
    expect(views.view('node-1')!.truncated).toBe(true);
  });

  it("reads an older agent's inline view (no shards) as before", () => {
    const views = new AgentViews(C);
    views.apply(keys.agent(C, 'old'), header('old', { shards: undefined, programmed: { [frontend(1)]: ['10.0.0.1:80'] }, truncated: true }));
    expect(views.view('old')).toMatchObject({ programmed: { [frontend(1)]: ['10.0.0.1:80'] }, truncated: true });
    expect(views.usersOf(frontend(1))).toEqual([['old', ['10.0.0.1:80']]]);
  });
});
