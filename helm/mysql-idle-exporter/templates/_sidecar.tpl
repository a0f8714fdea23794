{{/*
=====================================================================================
Reusable sidecar templates (the public interface of this chart for application charts)
=====================================================================================

Each template takes THIS chart's context: `.` inside this chart; in an application chart
that lists this chart as a dependency, `(index .Subcharts "mysql-idle-exporter")` (Helm 3.7+),
which carries this chart's coalesced values, its Chart (appVersion: the image tag) and the
release, so names (Secret, labels) agree with the objects this chart renders.

  mysql-idle-exporter.sidecarContainer   one item of a pod's `containers:` list
  mysql-idle-exporter.sidecarVolumes     the items it needs in the pod's `volumes:` list
  mysql-idle-exporter.sidecarPodLabels   the pod label the Service/PodMonitor select on

Application chart, pod template (set `mysql-idle-exporter.mode: external` in its values):

    metadata:
      labels:
        {{- include "mysql-idle-exporter.sidecarPodLabels" (index .Subcharts "mysql-idle-exporter") | nindent 8 }}
    spec:
      shareProcessNamespace: true        # optional: pid/process attribution
      containers:
        - name: app
          ...
        {{- include "mysql-idle-exporter.sidecarContainer" (index .Subcharts "mysql-idle-exporter") | nindent 8 }}
      volumes:
        {{- include "mysql-idle-exporter.sidecarVolumes" (index .Subcharts "mysql-idle-exporter") | nindent 8 }}

The pod shares its network namespace between containers, so the exporter sees the
application's TCP sockets. It sees their pids (the `process` label, the RST form of
`dropped`) only when the pod sets `shareProcessNamespace: true` AND the exporter may read the
application's /proc/PID/fd: the application's uid AND gid (exporter.securityContext.runAsUser
and runAsGroup), or uid 0 with capabilities SYS_PTRACE and DAC_READ_SEARCH (SYS_PTRACE alone
is not enough; a non-root container gets no effective capability from capabilities.add).
Otherwise metrics carry `process="unknown"` and mysql_idle_sockets_without_owner says why.
*/}}

{{/* Command-line flags of the exporter. No secret ever goes here. */}}
{{- define "mysql-idle-exporter.args" -}}
- --web.listen-address=:{{ .Values.exporter.port }}
- --web.telemetry-path={{ .Values.exporter.telemetryPath }}
{{- if eq .Values.mode "node" }}
- --mode=node
{{- end }}
{{- range .Values.mysql.addresses }}
- --mysql.address={{ . }}
{{- end }}
{{- with .Values.mysql.user }}
- --mysql.user={{ . }}
{{- end }}
{{- if and (include "mysql-idle-exporter.hasCredentials" .) (eq .Values.auth.type "myCnf") }}
- --config.my-cnf=/etc/mysql-idle-exporter/auth/my.cnf
{{- end }}
- --risk.headroom={{ .Values.exporter.riskHeadroom }}
{{- $networkIdleTimeout := toString .Values.exporter.networkIdleTimeout }}
{{- if not (has $networkIdleTimeout (list "" "0" "0s" "0m" "0h" "0ms")) }}
- --network.idle-timeout={{ .Values.exporter.networkIdleTimeout }}
{{- end }}
- --sessions.top={{ .Values.exporter.sessionsTop }}
- --server.interval={{ .Values.exporter.serverInterval }}
{{- if .Values.exporter.keepState }}
- --state.dir=/var/lib/mysql-idle-exporter
{{- end }}
{{- with .Values.exporter.logLevel }}
- --log.level={{ . }}
{{- end }}
{{- with .Values.exporter.logFormat }}
- --log.format={{ . }}
{{- end }}
{{- range .Values.exporter.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The exporter container, as one item of a `containers:` list. */}}
{{- define "mysql-idle-exporter.sidecarContainer" -}}
{{- $portName := .Values.exporter.portName -}}
- name: {{ .Values.exporter.containerName }}
  image: {{ include "mysql-idle-exporter.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    {{- include "mysql-idle-exporter.args" . | nindent 4 }}
  {{- $env := list }}
  {{- if and (include "mysql-idle-exporter.hasCredentials" .) (eq .Values.auth.type "env") }}
  {{- $env = append $env (dict "name" "MYSQL_IDLE_EXPORTER_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" (include "mysql-idle-exporter.secretName" .) "key" .Values.auth.passwordKey))) }}
  {{- end }}
  {{- $env = concat $env .Values.exporter.extraEnv }}
  {{- with $env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: {{ $portName }}
      containerPort: {{ .Values.exporter.port }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $portName }}
      scheme: {{ .Values.exporter.probeScheme }}
    {{- toYaml .Values.exporter.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /healthz
      port: {{ $portName }}
      scheme: {{ .Values.exporter.probeScheme }}
    {{- toYaml .Values.exporter.readinessProbe | nindent 4 }}
  {{- with .Values.exporter.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (eq .Values.mode "node" | ternary .Values.node.securityContext .Values.exporter.securityContext) }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mysql-idle-exporter-tmp
      mountPath: /tmp
    {{- if .Values.exporter.keepState }}
    - name: mysql-idle-exporter-state
      mountPath: /var/lib/mysql-idle-exporter
    {{- end }}
    {{- if and (include "mysql-idle-exporter.hasCredentials" .) (eq .Values.auth.type "myCnf") }}
    - name: mysql-idle-exporter-auth
      mountPath: /etc/mysql-idle-exporter/auth
      readOnly: true
    {{- end }}
    {{- with .Values.exporter.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The volumes the exporter container mounts, as items of a `volumes:` list. */}}
{{- define "mysql-idle-exporter.sidecarVolumes" -}}
- name: mysql-idle-exporter-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if .Values.exporter.keepState }}
- name: mysql-idle-exporter-state
  emptyDir:
    sizeLimit: 16Mi
{{- end }}
{{- if and (include "mysql-idle-exporter.hasCredentials" .) (eq .Values.auth.type "myCnf") }}
- name: mysql-idle-exporter-auth
  secret:
    secretName: {{ include "mysql-idle-exporter.secretName" . }}
    defaultMode: 0444
    items:
      - key: {{ .Values.auth.myCnfKey }}
        path: my.cnf
{{- end }}
{{- end }}
