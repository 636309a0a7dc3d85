import { describe, expect, it } from 'vitest';
import { podUidFromCgroup } from './attest.js';

const UID = '3f1c2a9e-5b7d-4e21-9a0b-6c8d1e2f3a4b';

describe('podUidFromCgroup', () => {
  it('finds the pod UID in cgroupfs, systemd and test bed paths', () => {
    expect(podUidFromCgroup(`0::/kubepods/besteffort/pod${UID}/0123abcd\n`)).toBe(UID);
    expect(podUidFromCgroup(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-ab.scope\n`)).toBe(UID);
    expect(podUidFromCgroup(`12:memory:/x\n0::/skein/ab12c/nodes/east-node-1/pod-${UID}/exec\n`)).toBe(UID);
  });

  it('gives no pod for a process outside any pod', () => {
    expect(podUidFromCgroup('0::/system.slice/sshd.service\n')).toBeUndefined();
    expect(podUidFromCgroup('0::/user.slice/user-0.slice/session-3.scope\n')).toBeUndefined();
  });
});
