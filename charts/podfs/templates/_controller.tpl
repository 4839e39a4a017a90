{{- define "podfs.controllerName" -}}
{{- printf "%s-controller" (include "podfs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
