{{- define "calico-prep.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name, or release-chart when the release name does not contain the chart's. */}}
{{- define "calico-prep.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "calico-prep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "calico-prep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "calico-prep.labels" -}}
{{ include "calico-prep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "calico-prep.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The agent's user name in requests, for the admission policy. */}}
{{- define "calico-prep.username" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "calico-prep.fullname" . }}
{{- end }}
