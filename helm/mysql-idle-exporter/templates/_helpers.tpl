{{/*
Naming and label helpers. Every helper takes the chart's own context, so an application
chart that has this chart as a dependency can call them with
`(index .Subcharts "mysql-idle-exporter")` and get the same names as the chart's own objects.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "mysql-idle-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<name> unless the release name already contains the name. */}}
{{- define "mysql-idle-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version for the helm.sh/chart label. */}}
{{- define "mysql-idle-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace of the namespaced objects. */}}
{{- define "mysql-idle-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "mysql-idle-exporter.labels" -}}
helm.sh/chart: {{ include "mysql-idle-exporter.chart" . }}
{{ include "mysql-idle-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mysql-idle-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the chart's own Deployment. */}}
{{- define "mysql-idle-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mysql-idle-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The label a pod carries when it runs the exporter as a sidecar. The Service and PodMonitor
select on it in `sidecar` and `external` modes, so an application chart adds it to its pod
template with `include "mysql-idle-exporter.sidecarPodLabels"`.
*/}}
{{- define "mysql-idle-exporter.sidecarPodLabels" -}}
mysql-idle-exporter/instance: {{ include "mysql-idle-exporter.fullname" . }}
{{- end }}

{{/* Labels the Service and the PodMonitor select pods by. */}}
{{- define "mysql-idle-exporter.podSelectorLabels" -}}
{{- if has .Values.mode (list "standalone" "node") }}
{{- include "mysql-idle-exporter.selectorLabels" . }}
{{- else }}
{{- include "mysql-idle-exporter.sidecarPodLabels" . }}
{{- end }}
{{- end }}

{{/* Image reference: registry/repository@digest, or :tag (default appVersion). */}}
{{- define "mysql-idle-exporter.image" -}}
{{- $ref := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $ref = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $ref .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the credentials: the existing one, or the chart's. */}}
{{- define "mysql-idle-exporter.secretName" -}}
{{- default (include "mysql-idle-exporter.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* "true" when the exporter gets credentials from a Secret. */}}
{{- define "mysql-idle-exporter.hasCredentials" -}}
{{- if or .Values.auth.existingSecret .Values.auth.password }}true{{ end }}
{{- end }}

{{/* "true" when the chart creates the Secret. */}}
{{- define "mysql-idle-exporter.createSecret" -}}
{{- if and (not .Values.auth.existingSecret) .Values.auth.password }}true{{ end }}
{{- end }}

{{/* ServiceAccount of the chart's pods. */}}
{{- define "mysql-idle-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mysql-idle-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A value quoted for a my.cnf option file: backslash, double quote and line ends escaped. */}}
{{- define "mysql-idle-exporter.myCnfQuote" -}}
{{- printf "\"%s\"" (. | toString | replace "\\" "\\\\" | replace "\"" "\\\"" | replace "\n" "\\n" | replace "\r" "\\r") }}
{{- end }}

{{/* The my.cnf of a chart-created Secret (auth.type: myCnf). */}}
{{- define "mysql-idle-exporter.myCnf" -}}
[client]
{{- if .Values.mysql.user }}
user = {{ include "mysql-idle-exporter.myCnfQuote" .Values.mysql.user }}
{{- end }}
password = {{ include "mysql-idle-exporter.myCnfQuote" .Values.auth.password }}
{{- range $key, $value := .Values.auth.myCnfOptions }}
{{ $key }} = {{ include "mysql-idle-exporter.myCnfQuote" $value }}
{{- end }}
{{ end }}

{{/*
A container's uid or gid as Kubernetes resolves it: the container's securityContext, else the
pod's, else "image" (the image's USER). Argument: (list CONTAINER_CONTEXT POD_CONTEXT KEY).
*/}}
{{- define "mysql-idle-exporter.securityId" -}}
{{- $container := index . 0 | default dict }}
{{- $pod := index . 1 | default dict }}
{{- $key := index . 2 }}
{{- if hasKey $container $key }}{{ index $container $key | int64 }}
{{- else if hasKey $pod $key }}{{ index $pod $key | int64 }}
{{- else }}image{{ end }}
{{- end }}

{{/*
How the exporter may read the owners of the application's sockets (its /proc/PID/fd), as the
privilege matrix of docs/kubernetes.md measured it: "same-ids" (the application's uid AND
gid), "root-capabilities" (uid 0 with SYS_PTRACE and DAC_READ_SEARCH), or "" (it cannot: a
different uid or gid, SYS_PTRACE alone, or capabilities added to a non-root container, which
Kubernetes never makes effective). Argument: (dict "exporter" CTX "app" CTX "pod" CTX).
*/}}
{{- define "mysql-idle-exporter.ownerAccess" -}}
{{- $uid := include "mysql-idle-exporter.securityId" (list .exporter .pod "runAsUser") }}
{{- $gid := include "mysql-idle-exporter.securityId" (list .exporter .pod "runAsGroup") }}
{{- $appUid := include "mysql-idle-exporter.securityId" (list .app .pod "runAsUser") }}
{{- $appGid := include "mysql-idle-exporter.securityId" (list .app .pod "runAsGroup") }}
{{- $added := list }}
{{- with (.exporter | default dict).capabilities }}{{ $added = .add | default list }}{{ end }}
{{- $ptrace := or (has "SYS_PTRACE" $added) (has "CAP_SYS_PTRACE" $added) }}
{{- $dac := or (has "DAC_READ_SEARCH" $added) (has "CAP_DAC_READ_SEARCH" $added) }}
{{- if and (eq $uid $appUid) (eq $gid $appGid) (ne $uid "image") (ne $gid "image") }}same-ids
{{- else if and (eq $uid "0") $ptrace $dac }}root-capabilities
{{- end }}
{{- end }}

