{{/* Chart name, or nameOverride. */}}
{{- define "offport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every resource name: fullnameOverride, else <release>-<name> (just the release name
when it already contains the name). Kept to 47 characters so that "<prefix>-normalize-proxy" is
a valid Service name (63).
*/}}
{{- define "offport.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "offport.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 47 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a stage's resources; call with (dict "root" $ "stage" $name). */}}
{{- define "offport.stageName" -}}
{{- printf "%s-%s" (include "offport.fullname" .root) .stage -}}
{{- end -}}

{{- define "offport.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "offport.labels" -}}
helm.sh/chart: {{ include "offport.chart" . }}
{{ include "offport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: offport
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels selecting every pod of the release (stages and setup Job). */}}
{{- define "offport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "offport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels selecting one stage's pods; call with (dict "root" $ "stage" $name). */}}
{{- define "offport.stageSelectorLabels" -}}
{{ include "offport.selectorLabels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "offport.stageLabels" -}}
{{ include "offport.labels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end -}}

{{- define "offport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "offport.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "offport.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Kafka security protocol derived from SASL and TLS. */}}
{{- define "offport.kafka.protocol" -}}
{{- $sasl := .Values.kafka.sasl.enabled -}}
{{- $tls := .Values.kafka.tls.enabled -}}
{{- if and $sasl $tls -}}sasl_ssl
{{- else if $sasl -}}sasl_plaintext
{{- else if $tls -}}ssl
{{- else -}}plaintext
{{- end -}}
{{- end -}}

{{/* Where the Kafka and registry TLS Secrets are mounted. */}}
{{- define "offport.kafkaTlsDir" -}}/etc/offport/kafka-tls{{- end -}}
{{- define "offport.registryTlsDir" -}}/etc/offport/registry-tls{{- end -}}

{{/* Fails on value combinations the schema cannot express. */}}
{{- define "offport.validate" -}}
{{- $v := .Values -}}
{{- if $v.kafka.sasl.enabled -}}
{{- if not $v.kafka.sasl.existingSecret -}}
{{- fail "kafka.sasl.enabled: set kafka.sasl.existingSecret, the Secret holding the SASL password (passwords are never taken as values)" -}}
{{- end -}}
{{- if not (or $v.kafka.sasl.username $v.kafka.sasl.usernameKey) -}}
{{- fail "kafka.sasl.enabled: set kafka.sasl.username, or kafka.sasl.usernameKey to read it from kafka.sasl.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and $v.kafka.tls.existingSecret (not $v.kafka.tls.enabled) -}}
{{- fail "kafka.tls.existingSecret is set but kafka.tls.enabled is false" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled (not $v.kafka.tls.existingSecret) (or $v.kafka.tls.clientAuth $v.kafka.tls.keyPasswordKey) -}}
{{- fail "kafka.tls.clientAuth and kafka.tls.keyPasswordKey need kafka.tls.existingSecret (the Secret with the client certificate and key)" -}}
{{- end -}}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.existingSecret (not $v.kafka.tls.caKey) (not $v.kafka.tls.clientAuth) -}}
{{- fail "kafka.tls.existingSecret is set but nothing is taken from it: set kafka.tls.caKey and/or kafka.tls.clientAuth" -}}
{{- end -}}
{{- if and $v.registry.tls.existingSecret (not $v.registry.tls.caKey) (not $v.registry.tls.clientAuth) -}}
{{- fail "registry.tls.existingSecret is set but nothing is taken from it: set registry.tls.caKey and/or registry.tls.clientAuth" -}}
{{- end -}}
{{- if and $v.kafka.tls.keyPasswordKey (not $v.kafka.tls.clientAuth) -}}
{{- fail "kafka.tls.keyPasswordKey is the passphrase of the client key: it needs kafka.tls.clientAuth" -}}
{{- end -}}
{{- if $v.registry.auth.enabled -}}
{{- if not $v.registry.auth.existingSecret -}}
{{- fail "registry.auth.enabled: set registry.auth.existingSecret, the Secret holding the registry password (passwords are never taken as values)" -}}
{{- end -}}
{{- if not (or $v.registry.auth.username $v.registry.auth.usernameKey) -}}
{{- fail "registry.auth.enabled: set registry.auth.username, or registry.auth.usernameKey to read it from registry.auth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and $v.registry.tls.existingSecret (not (hasPrefix "https://" $v.registry.url)) -}}
{{- fail "registry.tls.existingSecret is set but registry.url is not https://" -}}
{{- end -}}
{{- range $name, $stage := $v.stages -}}
{{- if $stage.enabled -}}
{{- $hpa := include "offport.stageAutoscaling" (dict "root" $ "stage" $stage) | fromYaml -}}
{{- $keda := include "offport.stageKeda" (dict "root" $ "stage" $stage) | fromYaml -}}
{{- if and $hpa.enabled $keda.enabled -}}
{{- fail (printf "stages.%s: both autoscaling (HPA) and keda are enabled; KEDA runs its own HPA for the Deployment, and two autoscalers would fight over its replicas: enable one of them" $name) -}}
{{- end -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "stages.%s.autoscaling: minReplicas (%d) is above maxReplicas (%d)" $name (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- if and $keda.enabled (gt (int $keda.minReplicas) (int $keda.maxReplicas)) -}}
{{- fail (printf "stages.%s.keda: minReplicas (%d) is above maxReplicas (%d)" $name (int $keda.minReplicas) (int $keda.maxReplicas)) -}}
{{- end -}}
{{- if $hpa.enabled -}}
{{- $resources := $stage.resources | default $v.resources -}}
{{- if not (and $resources.requests $resources.requests.cpu) -}}
{{- fail (printf "stages.%s.autoscaling: the HPA scales on CPU utilization, which needs a CPU request (resources.requests.cpu)" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A stage's HPA settings: the global autoscaling block merged with the stage's. */}}
{{- define "offport.stageAutoscaling" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.autoscaling) (deepCopy (.stage.autoscaling | default dict))) -}}
{{- end -}}

{{/* A stage's KEDA settings: the global keda block merged with the stage's. */}}
{{- define "offport.stageKeda" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.keda) (deepCopy (.stage.keda | default dict))) -}}
{{- end -}}

{{/* A stage's PodDisruptionBudget settings. */}}
{{- define "offport.stagePdb" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.podDisruptionBudget) (deepCopy (.stage.podDisruptionBudget | default dict))) -}}
{{- end -}}

{{/*
offport.yaml: the services' configuration (offport-kafka Settings, snake_case keys; the services
reject unknown keys). Secrets are not in it: they come from environment variables that reference
Secrets (see offport.secretEnv).
*/}}
{{- define "offport.config" -}}
{{- $v := .Values -}}
{{- $security := dict "protocol" (include "offport.kafka.protocol" .) -}}
{{- if $v.kafka.sasl.enabled -}}
{{- $_ := set $security "sasl_mechanism" $v.kafka.sasl.mechanism -}}
{{- if and $v.kafka.sasl.username (not $v.kafka.sasl.usernameKey) -}}
{{- $_ := set $security "sasl_username" $v.kafka.sasl.username -}}
{{- end -}}
{{- end -}}
{{- if $v.kafka.tls.enabled -}}
{{- $_ := set $security "endpoint_identification" $v.kafka.tls.endpointIdentification -}}
{{- if and $v.kafka.tls.existingSecret $v.kafka.tls.caKey -}}
{{- $_ := set $security "ca_location" (printf "%s/ca.crt" (include "offport.kafkaTlsDir" .)) -}}
{{- end -}}
{{- if and $v.kafka.tls.existingSecret $v.kafka.tls.clientAuth -}}
{{- $_ := set $security "certificate_location" (printf "%s/tls.crt" (include "offport.kafkaTlsDir" .)) -}}
{{- $_ := set $security "key_location" (printf "%s/tls.key" (include "offport.kafkaTlsDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $properties := dict -}}
{{- range $key, $value := $v.kafka.properties -}}
{{- $_ := set $properties $key (toString $value) -}}
{{- end -}}
{{- $kafka := dict "bootstrap_servers" $v.kafka.bootstrapServers "security" $security -}}
{{- if $properties -}}
{{- $_ := set $kafka "properties" $properties -}}
{{- end -}}
{{- $registry := dict "url" $v.registry.url "timeout_ms" (int64 $v.registry.timeoutMs) "compatibility" $v.registry.compatibility -}}
{{- if and $v.registry.auth.enabled $v.registry.auth.username (not $v.registry.auth.usernameKey) -}}
{{- $_ := set $registry "username" $v.registry.auth.username -}}
{{- end -}}
{{- if $v.registry.tls.existingSecret -}}
{{- if $v.registry.tls.caKey -}}
{{- $_ := set $registry "ca_location" (printf "%s/ca.crt" (include "offport.registryTlsDir" .)) -}}
{{- end -}}
{{- if $v.registry.tls.clientAuth -}}
{{- $_ := set $registry "certificate_location" (printf "%s/tls.crt" (include "offport.registryTlsDir" .)) -}}
{{- $_ := set $registry "key_location" (printf "%s/tls.key" (include "offport.registryTlsDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $topics := dict "prefix" $v.topics.prefix "partitions" (int64 $v.topics.partitions) "replication_factor" (int64 $v.topics.replicationFactor) -}}
{{- $log := dict "filter" $v.log.filter "json" $v.log.json -}}
{{- $pipeline := dict "batch_max_records" (int64 $v.pipeline.batchMaxRecords) "batch_linger_ms" (int64 $v.pipeline.batchLingerMs) "max_backoff_ms" (int64 $v.pipeline.maxBackoffMs) "group_prefix" $v.pipeline.groupPrefix "dead_letter_format" $v.pipeline.deadLetterFormat -}}
{{- $observability := dict "listen" (include "offport.listen" .) -}}
{{- $sources := list -}}
{{- range $v.normalize.sources -}}
{{- $source := dict "network" .network "device_id" .deviceId -}}
{{- if .platform -}}{{- $_ := set $source "platform" .platform -}}{{- end -}}
{{- if .appId -}}{{- $_ := set $source "app_id" .appId -}}{{- end -}}
{{- $sources = append $sources $source -}}
{{- end -}}
{{- $normalize := dict "max_record_bytes" (int64 $v.normalize.maxRecordBytes) "proxy_format" $v.normalize.proxyFormat "flow_wait_ms" (int64 $v.normalize.flowWaitMs) "flow_max_held" (int64 $v.normalize.flowMaxHeld) -}}
{{- if $v.normalize.defaultDeviceId -}}
{{- $_ := set $normalize "default_device_id" $v.normalize.defaultDeviceId -}}
{{- end -}}
{{- if $sources -}}
{{- $_ := set $normalize "sources" $sources -}}
{{- end -}}
{{- if $v.normalize.sourcesFile.volume -}}
{{- $_ := set $normalize "sources_file" (printf "/etc/offport/sources/%s" $v.normalize.sourcesFile.path) -}}
{{- end -}}
{{- $s := $v.stream -}}
{{- $stream := dict "allowed_lateness_ms" (int64 $s.allowedLatenessMs) "idle_timeout_ms" (int64 $s.idleTimeoutMs) "stop_at_end" $s.stopAtEnd "max_timeline_entries" (int64 $s.maxTimelineEntries) "restore_timeout_ms" (int64 $s.restoreTimeoutMs) "suppression_window_ms" (int64 $s.suppressionWindowMs) "max_state_bytes" (int64 $s.maxStateBytes) "workers" (int64 $s.workers) -}}
{{- toYaml (dict "kafka" $kafka "registry" $registry "topics" $topics "log" $log "pipeline" $pipeline "observability" $observability "normalize" $normalize "stream" $stream) -}}
{{- end -}}

{{- define "offport.listen" -}}
{{- if contains ":" .Values.metrics.listenHost -}}
{{- printf "[%s]:%d" .Values.metrics.listenHost (int .Values.metrics.port) -}}
{{- else -}}
{{- printf "%s:%d" .Values.metrics.listenHost (int .Values.metrics.port) -}}
{{- end -}}
{{- end -}}

{{/* Environment variables carrying secrets, by reference only. */}}
{{- define "offport.secretEnv" -}}
{{- $v := .Values -}}
{{- if $v.kafka.sasl.enabled }}
- name: OFFPORT__KAFKA__SECURITY__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret | quote }}
      key: {{ $v.kafka.sasl.passwordKey | quote }}
{{- if $v.kafka.sasl.usernameKey }}
- name: OFFPORT__KAFKA__SECURITY__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret | quote }}
      key: {{ $v.kafka.sasl.usernameKey | quote }}
{{- end }}
{{- end }}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.existingSecret $v.kafka.tls.clientAuth $v.kafka.tls.keyPasswordKey }}
- name: OFFPORT__KAFKA__SECURITY__KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.tls.existingSecret | quote }}
      key: {{ $v.kafka.tls.keyPasswordKey | quote }}
{{- end }}
{{- if $v.registry.auth.enabled }}
- name: OFFPORT__REGISTRY__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.registry.auth.existingSecret | quote }}
      key: {{ $v.registry.auth.passwordKey | quote }}
{{- if $v.registry.auth.usernameKey }}
- name: OFFPORT__REGISTRY__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.registry.auth.existingSecret | quote }}
      key: {{ $v.registry.auth.usernameKey | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts shared by the stages and the setup Job (config name given as .configMap). */}}
{{- define "offport.volumeMounts" -}}
- name: config
  mountPath: /etc/offport/offport.yaml
  subPath: offport.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "offport.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.registry.tls.existingSecret }}
- name: registry-tls
  mountPath: {{ include "offport.registryTlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "offport.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- $v := .root.Values }}
{{- if and $v.kafka.tls.enabled $v.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $v.kafka.tls.existingSecret | quote }}
    defaultMode: 0440
    items:
      {{- if $v.kafka.tls.caKey }}
      - key: {{ $v.kafka.tls.caKey | quote }}
        path: ca.crt
      {{- end }}
      {{- if $v.kafka.tls.clientAuth }}
      - key: {{ $v.kafka.tls.certKey | quote }}
        path: tls.crt
      - key: {{ $v.kafka.tls.keyKey | quote }}
        path: tls.key
      {{- end }}
{{- end }}
{{- if $v.registry.tls.existingSecret }}
- name: registry-tls
  secret:
    secretName: {{ $v.registry.tls.existingSecret | quote }}
    defaultMode: 0440
    items:
      {{- if $v.registry.tls.caKey }}
      - key: {{ $v.registry.tls.caKey | quote }}
        path: ca.crt
      {{- end }}
      {{- if $v.registry.tls.clientAuth }}
      - key: {{ $v.registry.tls.certKey | quote }}
        path: tls.crt
      - key: {{ $v.registry.tls.keyKey | quote }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end -}}

{{/* A stage container's environment: instance id, secret references, extraEnv, the stage's env. */}}
{{- define "offport.stageEnv" -}}
{{- $v := .root.Values -}}
# This instance's part of the transactional id: offport-<stage>-<pod name>.
- name: OFFPORT__PIPELINE__INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# Deployment pod names change on every rollout: static membership would leave a replaced
# pod's partitions waiting for the session timeout.
- name: OFFPORT__PIPELINE__STATIC_MEMBERSHIP
  value: {{ $v.pipeline.staticMembership | quote }}
{{- include "offport.secretEnv" .root }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .stage.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A number as a number, a string (a percentage) quoted. */}}
{{- define "offport.intOrString" -}}
{{- if kindIs "string" . -}}{{ . | quote }}{{- else -}}{{ int64 . }}{{- end -}}
{{- end -}}
