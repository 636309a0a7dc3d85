{{/* Labels every object carries. */}}
{{- define "skein.labels" -}}
app.kubernetes.io/name: skein
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
skein.io/cluster: {{ .Values.cluster.name }}
{{- end -}}

{{- define "skein.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "skein.etcdImage" -}}
{{ .Values.meshEtcd.image.repository }}:{{ .Values.meshEtcd.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where the mesh etcd is reached from inside the cluster (agents). Its certificate names it mesh-etcd.<cluster>. */}}
{{- define "skein.meshEtcdUrl" -}}
{{- if .Values.meshEtcd.inClusterUrl -}}
{{ .Values.meshEtcd.inClusterUrl }}
{{- else -}}
https://skein-mesh-etcd.{{ .Release.Namespace }}.svc:{{ .Values.meshEtcd.port }}
{{- end -}}
{{- end -}}

{{/* Clients reach skein-apiserver through the Kubernetes API's service proxy in skein-system only. */}}
{{- define "skein.checkNamespace" -}}
{{- if ne .Release.Namespace "skein-system" -}}
{{- fail (printf "install Skein into the namespace skein-system (got %q): helm install ... -n skein-system --create-namespace" .Release.Namespace) -}}
{{- end -}}
{{- if and (ne .Values.meshEtcd.service.type "NodePort") (not .Values.meshEtcd.advertise) -}}
{{- fail (printf "meshEtcd.advertise is required with meshEtcd.service.type %s: the URL peers dial, e.g. https://203.0.113.7:2379" .Values.meshEtcd.service.type) -}}
{{- end -}}
{{- end -}}

{{/* Containers that need nothing of the kernel: no capabilities, no privilege escalation, read-only root. */}}
{{- define "skein.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end -}}
