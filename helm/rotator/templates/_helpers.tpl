{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "rotator.fullname" -}}
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

{{- define "rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The metrics port, taken from config.server.listen (HOST:PORT). */}}
{{- define "rotator.port" -}}
{{- $listen := required "config.server.listen is required: the probes and metrics need it" .Values.config.server.listen }}
{{- splitList ":" $listen | last | int }}
{{- end }}

{{- define "rotator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Label matchers for the PrometheusRule expressions. */}}
{{- define "rotator.ruleSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "rotator.fullname" .) }}
{{- end }}
{{- end }}

{{/* Hardened container securityContext, shared by the daemon and the helm test pod. */}}
{{- define "rotator.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "rotator.podSecurityContext" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- with .Values.podSecurityContext }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment: plain values, then single keys of existing Secrets. */}}
{{- define "rotator.env" -}}
# The spool of rotated grants not yet written to a store ($STATE_DIRECTORY/spool,
# as under systemd) goes on the data volume, not the read-only image.
- name: STATE_DIRECTORY
  value: /var/lib/rotator
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $ref := .Values.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}

{{- define "rotator.envFrom" -}}
{{- range .Values.envFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{- define "rotator.dataClaim" -}}
{{- default (printf "%s-data" (include "rotator.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Volumes shared by the daemon and the helm test pod. */}}
{{- define "rotator.volumes" -}}
- name: config
  configMap:
    name: {{ include "rotator.fullname" . }}
{{- range $index, $name := .Values.extraAccountConfigMaps }}
- name: accounts-{{ $index }}
  configMap:
    name: {{ $name }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* The account ConfigMaps, each in its own directory under the config's: the
     kubelet creates the mount points inside the config volume (nested ConfigMap
     mounts); the include pattern skips the kubelet's ..data entries. */}}
{{- define "rotator.accountMounts" -}}
{{- range $index, $name := .Values.extraAccountConfigMaps }}
- name: accounts-{{ $index }}
  mountPath: /etc/rotator/accounts.d/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}
