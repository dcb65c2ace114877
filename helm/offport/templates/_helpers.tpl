{{- define "offport.fullname" -}}
{{- printf "%s-offport" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "offport.labels" -}}
app.kubernetes.io/name: offport
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
