{{- define "lbpair.fullname" -}}{{ .Release.Name }}-lbpair-operator{{- end -}}
{{- define "lbpair.labels" -}}
app.kubernetes.io/name: lbpair-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
