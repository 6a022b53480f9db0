{{- define "tandem.labels" -}}
app.kubernetes.io/name: tandem
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "tandem.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "tandem.controllerName" -}}{{ .Release.Name }}-controller{{- end }}
{{- define "tandem.agentName" -}}{{ .Release.Name }}-node-agent{{- end }}
{{- define "tandem.engineHostName" -}}{{ .Release.Name }}-engine-host{{- end }}

{{- define "tandem.engineHostImage" -}}
{{- with .Values.engineHost.image -}}
{{ .repository | default $.Values.image.repository }}:{{ .tag | default ($.Values.image.tag | default $.Chart.AppVersion) }}
{{- end -}}
{{- end }}
