import { describe, expect, it } from 'vitest';
import { podCgroupParent, podUidFromCgroup, podUidOfCgroupPath } from './attest.js';

const UID = '3f1c2a9e-5b7d-4e21-9a0b-6c8d1e2f3a4b';
const UID_ = UID.replace(/-/g, '_');
const OTHER = '0badc0de-0000-4000-8000-000000000001';
const NODE = '/skein/ab12c/nodes/east/1'; // the test bed's node cgroup (its children are pod-<uid>)
const CGROUPFS = ['/kubepods'];
const SYSTEMD = ['/kubepods.slice'];

describe('podUidOfCgroupPath: the pod cgroup under the node’s pod parent, nothing else', () => {
  it('accepts the test bed form <node>/pod-<uid>/…', () => {
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID}/exec`, [NODE])).toBe(UID);
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID}/client`, [NODE])).toBe(UID);
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID}`, [NODE])).toBe(UID);
  });

  it('accepts the cgroupfs kubepods forms: guaranteed directly under it, burstable/besteffort one level down', () => {
    expect(podUidOfCgroupPath(`/kubepods/pod${UID}/0123abcd`, CGROUPFS)).toBe(UID);
    expect(podUidOfCgroupPath(`/kubepods/burstable/pod${UID}/0123abcd`, CGROUPFS)).toBe(UID);
    expect(podUidOfCgroupPath(`/kubepods/besteffort/pod${UID}/0123abcd`, CGROUPFS)).toBe(UID);
    expect(podUidOfCgroupPath(`/kubepods/besteffort/pod${UID}`, CGROUPFS)).toBe(UID);
  });

  it('accepts the systemd kubepods forms', () => {
    expect(podUidOfCgroupPath(`/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-ab.scope`, SYSTEMD)).toBe(UID);
    expect(podUidOfCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-ab.scope`, SYSTEMD)).toBe(UID);
    expect(podUidOfCgroupPath(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`, SYSTEMD)).toBe(UID);
  });

  it('takes any of several parents', () => {
    expect(podUidOfCgroupPath(`/kubepods/pod${UID}/c`, [NODE, ...CGROUPFS])).toBe(UID);
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID}/c`, [...CGROUPFS, NODE])).toBe(UID);
  });

  it('refuses a pod UID anywhere else in the path (cgroups an attacker on the node can make)', () => {
    expect(podUidOfCgroupPath(`/evil/pod-${UID}`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`/evil/pod${UID}/exec`, CGROUPFS)).toBeUndefined();
    expect(podUidOfCgroupPath(`/skein/ab12c/evil/pod-${UID}`, [NODE])).toBeUndefined(); // beside the node
    expect(podUidOfCgroupPath(`${NODE}-evil/pod-${UID}`, [NODE])).toBeUndefined(); // a sibling sharing the prefix
    expect(podUidOfCgroupPath(`/evil${NODE}/pod-${UID}`, [NODE])).toBeUndefined(); // the parent's path nested elsewhere
    expect(podUidOfCgroupPath(`/kubepods-evil/pod${UID}`, CGROUPFS)).toBeUndefined();
    expect(podUidOfCgroupPath(`/system.slice/kubepods/pod${UID}`, CGROUPFS)).toBeUndefined();
  });

  it('takes the pod from the level right under the parent: a pod’s own sub-cgroup naming another pod is still that pod', () => {
    expect(podUidOfCgroupPath(`${NODE}/pod-${OTHER}/x/pod-${UID}`, [NODE])).toBe(OTHER);
    expect(podUidOfCgroupPath(`${NODE}/evil/pod-${UID}`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods/pod${OTHER}/burstable/pod${UID}`, CGROUPFS)).toBe(OTHER);
  });

  it('refuses look-alike names at the pod level', () => {
    expect(podUidOfCgroupPath(`${NODE}/xpod-${UID}`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID}x`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID.toUpperCase()}`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID_}`, [NODE])).toBeUndefined(); // underscores only in systemd slices
    expect(podUidOfCgroupPath(`${NODE}/pod-${UID.slice(0, -1)}`, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods/guaranteed/pod${UID}`, CGROUPFS)).toBeUndefined(); // not a QoS level kubelet makes
    expect(podUidOfCgroupPath(`${NODE}/burstable/pod-${UID}`, [NODE])).toBeUndefined(); // QoS levels only under kubepods
    expect(podUidOfCgroupPath(`/kubepods/burstable/x/pod${UID}`, CGROUPFS)).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods.slice/evil-pod${UID_}.slice`, SYSTEMD)).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod${UID_}.slice`, SYSTEMD)).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods.slice/kubepodsXpod${UID_}.slice`, SYSTEMD)).toBeUndefined();
  });

  it('gives no pod for the parent itself or a process outside any pod', () => {
    expect(podUidOfCgroupPath(NODE, [NODE])).toBeUndefined();
    expect(podUidOfCgroupPath('/system.slice/sshd.service', CGROUPFS)).toBeUndefined();
    expect(podUidOfCgroupPath(`/kubepods/pod${UID}`, [])).toBeUndefined();
  });
});

describe('podUidFromCgroup', () => {
  it('reads only the cgroup v2 line of /proc/<pid>/cgroup', () => {
    expect(podUidFromCgroup(`12:memory:/x\n0::${NODE}/pod-${UID}/exec\n`, [NODE])).toBe(UID);
    // A v1 hierarchy (hybrid hosts) naming a pod does not make a process in no pod one.
    expect(podUidFromCgroup(`4:memory:${NODE}/pod-${UID}/exec\n0::/user.slice/session-3.scope\n`, [NODE])).toBeUndefined();
    expect(podUidFromCgroup(`4:memory:${NODE}/pod-${UID}/exec\n`, [NODE])).toBeUndefined();
  });

  it('trusts no text with more than one v2 line (as a newline in a cgroup path would forge)', () => {
    expect(podUidFromCgroup(`4:name=systemd:/user.slice/x\n0::${NODE}/pod-${UID}/exec\n0::/user.slice/session-3.scope\n`, [NODE])).toBeUndefined();
    expect(podUidFromCgroup(`0::${NODE}/pod-${OTHER}/x\n0::${NODE}/pod-${UID}/exec\n`, [NODE])).toBeUndefined();
  });
});

describe('podCgroupParent: a flag value as /proc/<pid>/cgroup names it', () => {
  const hybrid = [
    '30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
    '34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
    '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
  ].join('\n');
  const nsed = '40 30 0:37 /kubelet.slice /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw';

  it('translates a directory under the cgroup2 mount, wherever that is mounted', () => {
    expect(podCgroupParent('/sys/fs/cgroup/unified/skein/ab12c/nodes/east/1', hybrid)).toBe('/skein/ab12c/nodes/east/1');
    expect(podCgroupParent('/sys/fs/cgroup/unified/kubepods/', hybrid)).toBe('/kubepods');
    expect(podCgroupParent('/sys/fs/cgroup/kubepods', nsed)).toBe('/kubelet.slice/kubepods');
  });

  it('keeps a cgroup path as it is, and refuses a relative or unclean one', () => {
    expect(podCgroupParent('/kubepods', hybrid)).toBe('/kubepods');
    expect(() => podCgroupParent('kubepods', hybrid)).toThrow(/absolute/);
    expect(() => podCgroupParent('/kubepods/../evil', hybrid)).toThrow(/plain path/);
  });
});
