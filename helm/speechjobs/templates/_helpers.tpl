{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "speechjobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: fullnameOverride, or the release name plus the chart name unless the release
name already contains it. Kept to 63 characters (DNS label).
*/}}
{{- define "speechjobs.fullname" -}}
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

{{- define "speechjobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that every resource carries.
*/}}
{{- define "speechjobs.labels" -}}
helm.sh/chart: {{ include "speechjobs.chart" . }}
{{ include "speechjobs.instanceLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: speechjobs
{{- end }}

{{/*
The labels of every pod of the release: the consumer's, the receiver's, the poller's and the replay Job's.
*/}}
{{- define "speechjobs.instanceLabels" -}}
app.kubernetes.io/name: {{ include "speechjobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The consumer pods' selector: the component label keeps the replay Job's, the receiver's and the poller's pods
out of the Service, the PDB and the autoscalers.
*/}}
{{- define "speechjobs.selectorLabels" -}}
{{ include "speechjobs.instanceLabels" . }}
app.kubernetes.io/component: consumer
{{- end }}

{{/*
The receiver's name: the full name plus -receiver, kept to 63 characters.
*/}}
{{- define "speechjobs.receiverFullname" -}}
{{- printf "%s-receiver" (include "speechjobs.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/*
The receiver pods' selector. The consumer's selector keeps its component label (consumer), so neither
Deployment's selector picks the other's pods, and the consumer's selector is unchanged across upgrades
(a Deployment's selector is immutable).
*/}}
{{- define "speechjobs.receiverSelectorLabels" -}}
{{ include "speechjobs.instanceLabels" . }}
app.kubernetes.io/component: receiver
{{- end }}

{{/*
The poller's name: the full name plus -poller, kept to 63 characters.
*/}}
{{- define "speechjobs.pollerFullname" -}}
{{- printf "%s-poller" (include "speechjobs.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
The poller pods' selector, apart from the consumer's and the receiver's like theirs from each other.
*/}}
{{- define "speechjobs.pollerSelectorLabels" -}}
{{ include "speechjobs.instanceLabels" . }}
app.kubernetes.io/component: poller
{{- end }}

{{- define "speechjobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "speechjobs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "speechjobs.secretName" -}}
{{- default (include "speechjobs.fullname" .) .Values.existingSecret.name }}
{{- end }}

{{/*
The replay Job's name carries the release revision: Jobs are immutable, so each upgrade with
dlqReplay.enabled creates a new one (and Helm deletes the previous one).
*/}}
{{- define "speechjobs.dlqReplayJobName" -}}
{{- printf "%s-dlq-replay-%d" (include "speechjobs.fullname" . | trunc 45 | trimSuffix "-") (int .Release.Revision) }}
{{- end }}

{{- define "speechjobs.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes waits after SIGTERM before SIGKILL: the service's own grace period, rounded up, plus
10 s for closing the broker and database connections.
*/}}
{{- define "speechjobs.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.config.shutdownGraceSeconds | int) 10 }}
{{- end }}

{{/*
The receiver's: its preStop pause (during which it still serves, while the endpoint removal reaches the
ingress controller), then the same grace period as the consumer's, rounded up, plus 10 s.
*/}}
{{- define "speechjobs.receiverTerminationGracePeriodSeconds" -}}
{{- add (int .Values.receiver.preStopSleepSeconds) (include "speechjobs.terminationGracePeriodSeconds" . | int) }}
{{- end }}

{{/*
The consumer's memory limit when resources.limits.memory is not set: baseline + factor × maxBytesInFlight,
so that the memory a replica may use follows from its configuration.
- baseline, 192 MiB: the interpreter, the imported libraries, the broker and database connections, and
  the small per-delivery objects of up to `prefetch` messages.
- factor, 4: a byte in flight exists as the raw body held until it is settled (1), as the JSON or XML
  objects parsed from it, one batch at a time (about 2), and in the job updates and events built from it,
  alive as models until the batch is written and published (about 1).
Both numbers are estimates, not measurements; replace them when measured. Rounded up to a whole MiB.
*/}}
{{- define "speechjobs.derivedMemoryLimit" -}}
{{- $mib := 1048576 }}
{{- $baselineMib := 192 }}
{{- $factor := 4 }}
{{- $bodiesMib := div (add (mul $factor (int64 .Values.config.maxBytesInFlight)) (sub $mib 1)) $mib }}
{{- printf "%dMi" (add $baselineMib $bodiesMib) }}
{{- end }}

{{/*
The consumer container's resources: .Values.resources, with the memory limit derived when it is not set
and the memory request equal to the limit when it is not set (Guaranteed memory: the pod is neither
scheduled on less than it may use nor the first evicted under node memory pressure).
*/}}
{{- define "speechjobs.resources" -}}
{{- include "speechjobs.boundedResources" (list .Values.resources (include "speechjobs.derivedMemoryLimit" .)) }}
{{- end }}

{{/*
The receiver's memory limit when receiver.resources.limits.memory is not set: baseline + factor ×
maxInFlight × maxBodyBytes.
- baseline, 128 MiB: the interpreter, uvicorn, the broker connection, and the buffers of the connections
  beyond maxInFlight, which are answered 503 before their bodies are read.
- factor, 2: a request's body exists as the chunks read and as the bytes joined from them, until the
  broker has confirmed it.
Estimates, not measurements, like the consumer's; rounded up to a whole MiB.
*/}}
{{- define "speechjobs.receiverDerivedMemoryLimit" -}}
{{- $mib := 1048576 }}
{{- $baselineMib := 128 }}
{{- $factor := 2 }}
{{- $bodies := mul $factor (int64 .Values.receiver.config.maxInFlight) (int64 .Values.config.maxBodyBytes) }}
{{- printf "%dMi" (add $baselineMib (div (add $bodies (sub $mib 1)) $mib)) }}
{{- end }}

{{- define "speechjobs.receiverResources" -}}
{{- include "speechjobs.boundedResources" (list .Values.receiver.resources (include "speechjobs.receiverDerivedMemoryLimit" .)) }}
{{- end }}

{{/*
The poller's: poller.resources, with a fixed memory limit of 256 MiB when it is not set. Its memory follows
no single setting: it holds up to poller.config.concurrency status answers per polled vendor, usually a few
KiB each (the client refuses any over 4 MiB).
*/}}
{{- define "speechjobs.pollerResources" -}}
{{- include "speechjobs.boundedResources" (list .Values.poller.resources "256Mi") }}
{{- end }}

{{/*
ResourceRequirements (first argument) with the memory limit set to the derived one (second argument) when
it is not set, and the memory request equal to the limit when it is not set.
*/}}
{{- define "speechjobs.boundedResources" -}}
{{- $resources := deepCopy (index . 0 | default dict) }}
{{- $limits := get $resources "limits" | default dict }}
{{- $requests := get $resources "requests" | default dict }}
{{- if not (get $limits "memory") }}
{{- $_ := set $limits "memory" (index . 1) }}
{{- end }}
{{- if not (get $requests "memory") }}
{{- $_ := set $requests "memory" (get $limits "memory") }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- $_ := set $resources "requests" $requests }}
{{- toYaml $resources }}
{{- end }}

{{/*
Checks across values that the schema cannot express.
*/}}
{{- define "speechjobs.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- fail "podDisruptionBudget needs minAvailable or maxUnavailable" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) (not .Values.prometheusRule.metricsSelector) }}
{{- fail "prometheusRule.enabled needs serviceMonitor.enabled, or prometheusRule.metricsSelector saying how your Prometheus labels the service's metrics" }}
{{- end }}
{{- $r := .Values.receiver }}
{{- if $r.enabled }}
{{- if and $r.autoscaling.enabled (gt (int $r.autoscaling.minReplicas) (int $r.autoscaling.maxReplicas)) }}
{{- fail "receiver.autoscaling.minReplicas must not exceed receiver.autoscaling.maxReplicas" }}
{{- end }}
{{- $rpdb := $r.podDisruptionBudget }}
{{- if and $rpdb.enabled (kindIs "invalid" $rpdb.minAvailable) (kindIs "invalid" $rpdb.maxUnavailable) }}
{{- fail "receiver.podDisruptionBudget needs minAvailable or maxUnavailable" }}
{{- end }}
{{- if and $r.ingress.enabled (not $r.ingress.hosts) }}
{{- fail "receiver.ingress.enabled needs receiver.ingress.hosts: the host names the vendors call" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment shared by the consumer and the replay Job: the connection URLs from the existing Secret, then
extraEnv. The non-secret settings come from the ConfigMap through envFrom.
*/}}
{{- define "speechjobs.env" -}}
- name: SPEECHJOBS_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "speechjobs.secretName" . }}
      key: {{ .Values.existingSecret.amqpUrlKey }}
- name: SPEECHJOBS_MONGODB_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "speechjobs.secretName" . }}
      key: {{ .Values.existingSecret.mongodbUrlKey }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The receiver's environment: the AMQP URL, the callback tokens and the ICE signing settings from the existing
Secret (never MongoDB's URL: the receiver does not use it), then extraEnv and receiver.extraEnv. The keys
other than the AMQP URL's are optional, so the pods start without them; without callback tokens, though,
the receiver answers every callback 404.
*/}}
{{- define "speechjobs.receiverEnv" -}}
{{- $secret := include "speechjobs.secretName" . }}
{{- $keys := .Values.existingSecret -}}
- name: SPEECHJOBS_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.amqpUrlKey }}
- name: SPEECHJOBS_CALLBACK_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.callbackTokensKey }}
      optional: true
- name: SPEECHJOBS_ICE_AUTH_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.iceAuthKeysKey }}
      optional: true
{{- /* The URL ICE signs holds the aliyun-ice token: it is kept with the keys, out of the ConfigMap. */}}
- name: SPEECHJOBS_ICE_CALLBACK_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.iceCallbackUrlKey }}
      optional: true
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .Values.receiver.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The poller's environment: the AMQP and MongoDB URLs, and the vendors' credentials, from the existing Secret,
then extraEnv and poller.extraEnv. Only the poller gets the credentials. Each credential key is optional: a
provider whose credentials are missing is not polled (the poller logs it at start), so the pods start with
any subset of them.
*/}}
{{- define "speechjobs.pollerEnv" -}}
{{- $secret := include "speechjobs.secretName" . }}
{{- $keys := .Values.existingSecret -}}
- name: SPEECHJOBS_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.amqpUrlKey }}
- name: SPEECHJOBS_MONGODB_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $keys.mongodbUrlKey }}
{{- range $name, $key := dict
  "SPEECHJOBS_ALIBABA_ACCESS_KEY_ID" $keys.alibabaAccessKeyIdKey
  "SPEECHJOBS_ALIBABA_ACCESS_KEY_SECRET" $keys.alibabaAccessKeySecretKey
  "SPEECHJOBS_ALIBABA_SECURITY_TOKEN" $keys.alibabaSecurityTokenKey
  "SPEECHJOBS_TENCENT_SECRET_ID" $keys.tencentSecretIdKey
  "SPEECHJOBS_TENCENT_SECRET_KEY" $keys.tencentSecretKeyKey
  "SPEECHJOBS_HUAWEI_ACCESS_KEY" $keys.huaweiAccessKeyKey
  "SPEECHJOBS_HUAWEI_SECRET_KEY" $keys.huaweiSecretKeyKey }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .Values.poller.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
A number for the ConfigMap, quoted: a whole one as an integer (numbers from values files are floats, which
are written 2.592e+06 from a million on), any other as it is.
*/}}
{{- define "speechjobs.number" -}}
{{- if eq (float64 .) (floor .) }}{{ int64 . | quote }}{{ else }}{{ . | quote }}{{ end }}
{{- end }}

{{/*
A poller setting for the ConfigMap, `600` for every provider or `provider=value` pairs: a string as it is, a
number (e.g. from --set) as speechjobs.number writes it.
*/}}
{{- define "speechjobs.perProvider" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ include "speechjobs.number" . }}{{ end }}
{{- end }}

{{/*
Topology spread constraints with the given selector (a YAML string) as the labelSelector of the entries
that have none. Called with (list $ selectorLabels).
*/}}
{{- define "speechjobs.topologySpreadConstraints" -}}
{{- $root := index . 0 }}
{{- $selector := index . 1 | fromYaml }}
{{- $constraints := list }}
{{- range $root.Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/*
Pod-level settings shared by the consumer, the receiver, the poller and the replay Job.
*/}}
{{- define "speechjobs.podCommon" -}}
serviceAccountName: {{ include "speechjobs.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the consumer, the receiver, the poller and the replay Job: a writable /tmp on a read-only
root filesystem, and extraVolumes (e.g. the CA of an amqps:// URL, which the receiver needs as well).
*/}}
{{- define "speechjobs.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "speechjobs.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
PromQL label matchers that select this release's own metrics: prometheusRule.metricsSelector, or else the
ServiceMonitor's targets, which the Prometheus Operator labels with job (the Service's name) and namespace.
*/}}
{{- define "speechjobs.metricsSelector" -}}
{{- .Values.prometheusRule.metricsSelector | default (printf "job=%q, namespace=%q" (include "speechjobs.fullname" .) .Release.Namespace) }}
{{- end }}
