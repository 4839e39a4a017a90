{{/* Resource names: the release name, trimmed for DNS labels. */}}
{{- define "podfs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "podfs.webhookName" -}}
{{- printf "%s-webhook" (include "podfs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podfs.csiNodeName" -}}
{{- printf "%s-csi-node" (include "podfs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration is cluster-scoped: name it after the release and its namespace. */}}
{{- define "podfs.mwcName" -}}
{{- printf "%s-%s" (include "podfs.webhookName" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podfs.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "podfs.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "podfs.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Environment every podfs pod gets: logging and, when set, the API server address. */}}
{{- define "podfs.env" -}}
- name: PODFS_LOG
  value: {{ .Values.logLevel | quote }}
- name: PODFS_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.kubernetesAPI.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetesAPI.port }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The webhook's serving certificate Secret (cert-manager mode). */}}
{{- define "podfs.webhookCertSecret" -}}
{{- printf "%s-tls" (include "podfs.webhookName" .) -}}
{{- end -}}
