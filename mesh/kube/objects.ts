// The Kubernetes objects Skein reads, as they arrive (see Wire): timestamps are RFC 3339 strings.
import type { KubernetesObject, V1CertificateSigningRequest, V1EndpointSlice, V1ListMeta, V1Namespace, V1Node, V1Pod, V1Secret, V1Service } from '@kubernetes/client-node';

/**
 * A Kubernetes API type as it arrives on the wire: client-node's generated models declare timestamps as
 * `Date`, but plain JSON (this client, and client-node's own list-watch) carries RFC 3339 strings.
 */
export type Wire<T> = T extends Date ? string : T extends (infer U)[] ? Wire<U>[] : T extends object ? { [K in keyof T]: Wire<T[K]> } : T;

export type Pod = Wire<V1Pod>;
/** A Kubernetes Node (named apart from Skein's mesh nodes). */
export type KubeNode = Wire<V1Node>;
export type Service = Wire<V1Service>;
export type EndpointSlice = Wire<V1EndpointSlice>;
export type Namespace = Wire<V1Namespace>;
export type Secret = Wire<V1Secret>;
export type CertificateSigningRequest = Wire<V1CertificateSigningRequest>;
export type KubeObject = Wire<KubernetesObject>;
export type KubeList<T> = { metadata?: Wire<V1ListMeta>; items: T[] };
