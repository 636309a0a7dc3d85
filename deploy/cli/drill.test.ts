import { describe, expect, it } from 'vitest';
import { faultFlags } from './drill.js';

describe('skein drill fault flags', () => {
  it('defaults to scaling the local backends', () => {
    expect(faultFlags({})).toEqual({ fault: 'scale', target: 'local' });
    expect(faultFlags({ fault: 'blackhole', target: 'remote', context: 'skein-east', remoteContext: 'skein-west' })).toEqual({ fault: 'blackhole', target: 'remote', remoteContext: 'skein-west' });
    expect(faultFlags({ fault: 'kill' })).toEqual({ fault: 'kill', target: 'local' });
  });

  it('refuses what it cannot do, naming the flag and what it takes', () => {
    expect(() => faultFlags({ fault: 'crash' })).toThrow('--fault crash: use scale, kill, blackhole');
    expect(() => faultFlags({ target: 'elsewhere' })).toThrow('--target elsewhere: use local, remote');
    expect(() => faultFlags({ target: 'remote' })).toThrow('--target remote needs --remote-context CONTEXT');
    expect(() => faultFlags({ remoteContext: 'skein-west' })).toThrow('--remote-context skein-west is for --target remote');
    expect(() => faultFlags({ target: 'remote', context: 'skein-east', remoteContext: 'skein-east' })).toThrow("--remote-context skein-east is the drill's own cluster (--context)");
  });
});
