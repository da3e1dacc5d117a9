{{/*
Replicas and how they are replaced. One replica: Recreate, so the old pod stops
before the new one starts (two unpartitioned daemons would both schedule every
account; the lease keeps that safe, but it doubles the work). Several: they
divide the accounts through config.server.coordination, and a RollingUpdate
brings one new pod in (it joins the group, the accounts re-partition) before an
old one leaves; the per-account lease in the state store guards the overlap.
*/}}
{{- define "rotator.replicas" -}}
{{- $replicas := int .Values.replicas -}}
{{- if gt $replicas 1 -}}
{{- include "rotator.replicasAllowed" . -}}
replicas: {{ $replicas }}
strategy:
  type: RollingUpdate
  rollingUpdate:
    maxSurge: 1
    maxUnavailable: 0
{{- else -}}
replicas: 1
strategy:
  type: Recreate
{{- end -}}
{{- end -}}

{{/*
What replicas > 1 needs; each refusal names what is wrong and what would be right.
*/}}
{{- define "rotator.replicasAllowed" -}}
{{- $server := .Values.config.server | default dict -}}
{{- $coordination := $server.coordination | default dict -}}
{{- if not $coordination.url -}}
{{- fail (printf "replicas: %d needs config.server.coordination.url (a tooz backend URL such as redis://redis.%s.svc:6379, or env:NAME when it holds a password): without it every replica would schedule every account" (int .Values.replicas) .Release.Namespace) -}}
{{- end -}}
{{- range $name, $store := (.Values.config.stores | default dict) -}}
{{- if eq (toString $store.type) "file" -}}
{{- fail (printf "replicas: %d cannot use config.stores.%s (type: file): each pod would keep its own copy of the state; keep state and sinks in vault or aws stores, or set replicas: 1" (int $.Values.replicas) $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.persistence.enabled (has "ReadWriteOnce" .Values.persistence.accessModes) -}}
{{- fail (printf "replicas: %d cannot share one ReadWriteOnce data volume (persistence.accessModes): it attaches to one node; set persistence.enabled: false (each pod's spool on its own emptyDir) or replicas: 1" (int .Values.replicas)) -}}
{{- end -}}
{{- end -}}
