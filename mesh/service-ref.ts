// How clients reach skein-apiserver: through the Kubernetes API's service proxy, so `skein status` needs
// nothing but a kubeconfig context and works the same on kind, the local test bed and real clusters.
export const SKEIN_NAMESPACE = 'skein-system';
const SKEIN_SERVICE = 'skein-apiserver';
const SKEIN_PORT_NAME = 'http';

export const skeinProxyPath = (path: string) => `/api/v1/namespaces/${SKEIN_NAMESPACE}/services/${SKEIN_SERVICE}:${SKEIN_PORT_NAME}/proxy${path}`;
