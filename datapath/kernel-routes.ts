// The node's routes of Skein's protocol (native/routes.cc), in the network namespace the agent runs in.
import { nativeAddon, type NativeRoute } from './native-addon.js';

export interface RouteTable {
  list(): NativeRoute[];
  replace(dst: string, prefixLen: number, via: string): void;
  remove(dst: string, prefixLen: number): void;
}

export const kernelRoutes: RouteTable = {
  list: () => nativeAddon().routeList(),
  replace: (dst, prefixLen, via) => nativeAddon().routeReplace(dst, prefixLen, via),
  remove: (dst, prefixLen) => nativeAddon().routeDelete(dst, prefixLen),
};
