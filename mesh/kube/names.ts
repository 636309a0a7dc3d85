// Kubernetes object names as the API server itself validates them, and API paths built only from names
// that passed. A caller-supplied name pasted into a path unchecked can carry `..` or `/` segments that URL
// resolution turns into a different object (`pods/../../kube-system/pods/x`).
import { z } from 'zod';

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Namespaces (and service names) are DNS-1123 labels. */
const Dns1123Label = z.string().max(63, 'at most 63 characters').regex(LABEL, 'lowercase letters, digits and "-", starting and ending with a letter or digit');
/** Pod, node, Secret and service-account names are DNS-1123 subdomains. */
export const Dns1123Subdomain = z.string().max(253, 'at most 253 characters').regex(SUBDOMAIN, 'lowercase letters, digits, "-" and ".", each dot-separated part starting and ending with a letter or digit');
const ObjectUid = z.string().regex(UID, 'a lowercase RFC 4122 UID such as 0f8fad5b-d9cb-469f-a165-70867728950e');

export const PodRef = z.object({ namespace: Dns1123Label, name: Dns1123Subdomain, uid: ObjectUid });
export type PodRef = z.infer<typeof PodRef>;

/** `/api/v1/namespaces/<ns>/pods/<name>` from names that are validated and escaped (throws otherwise). */
export function podPath(namespace: string, name: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(Dns1123Label.parse(namespace))}/pods/${encodeURIComponent(Dns1123Subdomain.parse(name))}`;
}
