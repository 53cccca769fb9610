{{/*
Fixed paths of the image (see deploy/Dockerfile); the plain manifests in deploy/ use
the same ones.
*/}}
{{- define "audit-gateway.configDir" -}}/etc/audit-gateway{{- end -}}
{{- define "audit-gateway.configPath" -}}{{ include "audit-gateway.configDir" . }}/gateway.yaml{{- end -}}
{{- define "audit-gateway.dataDir" -}}/var/lib/audit-gateway{{- end -}}
{{- define "audit-gateway.secretDir" -}}/var/run/secrets/audit-gateway{{- end -}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "audit-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name appended unless it contains it. */}}
{{- define "audit-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "audit-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The mode, validated. */}}
{{- define "audit-gateway.mode" -}}
{{- if not (has .Values.mode (list "consumer" "webhook")) -}}
{{- fail (printf "mode must be \"consumer\" or \"webhook\", not %q (sidecar: see the chart README)" (toString .Values.mode)) -}}
{{- end -}}
{{- .Values.mode -}}
{{- end -}}

{{- define "audit-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audit-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "audit-gateway.mode" . }}
{{- end -}}

{{- define "audit-gateway.labels" -}}
helm.sh/chart: {{ include "audit-gateway.chart" . }}
{{ include "audit-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "audit-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "audit-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "audit-gateway.secretName" -}}
{{- default (include "audit-gateway.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "audit-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* "true" when the upstream token comes from the Secret as token_file. */}}
{{- define "audit-gateway.upstreamTokenFromSecret" -}}
{{- $up := .Values.config.upstream | default dict -}}
{{- if not (or $up.token $up.token_file $up.oauth2) -}}true{{- end -}}
{{- end -}}

{{/* Intake listen address: 0.0.0.0 for webhooks, loopback for consumers. */}}
{{- define "audit-gateway.listen" -}}
{{- if eq (include "audit-gateway.mode" .) "webhook" -}}
{{- printf "0.0.0.0:%d" (int .Values.ports.http) -}}
{{- else -}}
{{- printf "127.0.0.1:%d" (int .Values.ports.http) -}}
{{- end -}}
{{- end -}}

{{/*
The gateway configuration file: .Values.config, the sources of the selected mode,
the upstream token file and the spool path.
*/}}
{{- define "audit-gateway.gatewayConfig" -}}
{{- $mode := include "audit-gateway.mode" . -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $up := deepCopy (get $cfg "upstream" | default dict) -}}
{{- if include "audit-gateway.upstreamTokenFromSecret" . -}}
{{- $_ := set $up "token_file" (printf "%s/token" (include "audit-gateway.secretDir" .)) -}}
{{- end -}}
{{- $_ := set $cfg "upstream" $up -}}
{{- $buf := deepCopy (get $cfg "buffer" | default dict) -}}
{{- if and (eq (toString (get $buf "type")) "disk") (not (get $buf "path")) -}}
{{- $_ := set $buf "path" (printf "%s/spool" (include "audit-gateway.dataDir" .)) -}}
{{- end -}}
{{- $_ := set $cfg "buffer" $buf -}}
{{- $sources := (index .Values $mode).sources | default dict -}}
{{- if not $sources -}}
{{- fail (printf "%s.sources is empty: mode %q needs at least one source" $mode $mode) -}}
{{- end -}}
{{- $_ := set $cfg "sources" (deepCopy $sources) -}}
{{- toYaml $cfg -}}
{{- end -}}
