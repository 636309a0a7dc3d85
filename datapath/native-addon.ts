// The native addon (datapath/native/: BPF objects and maps in skein_bpf.cc, routes in routes.cc), loaded on
// first use so that what only validates works (and is unit-tested) without the built addon.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { sourceDir } from '../mtls/source-dir.js';

/** The addon's BPF object; map errors carry `errno`. */
export interface NativeBpfObject {
  programs(): string[];
  maps(): string[];
  attachCgroup(program: string, cgroup: string): number;
  pinLink(id: number, path: string): void;
  detach(id: number): boolean;
  update(map: string, key: Buffer, value: Buffer): void;
  lookup(map: string, key: Buffer): Buffer | null;
  remove(map: string, key: Buffer): boolean;
  keys(map: string): Buffer[];
  /** Every [key, value] of a map, walked in one native call. */
  entries(map: string): [Buffer, Buffer][];
  /** Swaps the program of a pinned link in place (the hook is never detached). */
  replaceLink(pinPath: string, program: string): void;
  maxEntries(map: string): number;
  /** Maps whose pins had another layout (an older datapath's) and were made afresh by this load. */
  replacedPins(): string[];
  close(): void;
}

/** A route of Skein's protocol in the main table of the calling process's network namespace. */
export interface NativeRoute {
  dst: string;
  prefixLen: number;
  via: string;
}

interface NativeModule {
  BpfObject: new (path: string, pinDir?: string) => NativeBpfObject;
  /** Errors carry `errno` (ENETUNREACH: the gateway is not on a connected network). */
  routeReplace(dst: string, prefixLen: number, via: string): void;
  /** ESRCH when Skein has no route there. */
  routeDelete(dst: string, prefixLen: number): void;
  routeList(): NativeRoute[];
  /** The protocol number Skein's routes carry (`ip route show proto <n>`). */
  ROUTE_PROTOCOL: number;
}

/** From datapath/ (source) or dist/datapath/ (compiled): the build output lives in the source tree. */
export const buildDir = () => join(sourceDir(import.meta.url), 'build');

let native: NativeModule | undefined;
export function nativeAddon(): NativeModule {
  native ??= createRequire(import.meta.url)(join(buildDir(), 'skein_bpf.node')) as NativeModule;
  return native;
}
