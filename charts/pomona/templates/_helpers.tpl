{{/*
Object names are fixed rather than derived from the release: docs/components.md names the Secrets
and the Lease every component agrees on, and the RBAC objects are cluster-wide, so one Pomona per cluster.
*/}}

{{- define "pomona.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "pomona.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: pomona
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pomona
{{- end }}

{{/* Selector labels of one component; stable across upgrades, so they leave out versions. */}}
{{- define "pomona.selectorLabels" -}}
app.kubernetes.io/name: pomona
app.kubernetes.io/component: {{ . }}
{{- end }}

{{/* The Secrets the gateway may read: the compiled config (crds/api/gateway-config-codec.ts) and the node token. */}}
{{- define "pomona.gatewaySecretNames" -}}
- pomona-gateway-config
{{- range $i := until 64 }}
- {{ printf "pomona-gateway-config-keys-%02d" $i }}
{{- end }}
- pomona-node-token
- pomona-key-hashing

- pomona-gateway-node-client
{{- end }}

{{- define "pomona.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "pomona.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* The user the node-agent's Pods authenticate as; the admission policy keys on it. */}}
{{- define "pomona.nodeAgentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:pomona-node-agent
{{- end }}

{{- /* The namespaces whose Secrets the operator may use, as a JSON list: the release's, then operator.watchNamespaces, each once. */}}
{{- define "pomona.operatorSecretNamespaces" -}}
{{- prepend .Values.operator.watchNamespaces .Release.Namespace | uniq | toJson -}}
{{- end }}
