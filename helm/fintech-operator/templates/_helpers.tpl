{{/*
The chart name, for app.kubernetes.io/name.
*/}}
{{- define "fintech-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the operator's objects: the release name when it already contains the chart
name (so `helm install fintech-operator` gives fintech-operator, not
fintech-operator-fintech-operator). Truncated to 63 characters, the longest DNS label.
*/}}
{{- define "fintech-operator.fullname" -}}
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

{{/*
The helm.sh/chart label.
*/}}
{{- define "fintech-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of a component. Call with (dict "ctx" $ "name" NAME "component" COMPONENT).
*/}}
{{- define "fintech-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Standard labels of a component. Call with
(dict "ctx" $ "name" NAME "component" COMPONENT "version" VERSION).
*/}}
{{- define "fintech-operator.labels" -}}
{{ include "fintech-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .version | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: fintech
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "fintech-operator.chart" .ctx }}
{{- end }}

{{/*
Labels of the operator's own objects.
*/}}
{{- define "fintech-operator.operatorLabels" -}}
{{ include "fintech-operator.labels" (dict "ctx" . "name" (include "fintech-operator.name" .) "component" "operator" "version" .Chart.AppVersion) }}
{{- end }}

{{/*
Selector labels of the operator's pods.
*/}}
{{- define "fintech-operator.operatorSelectorLabels" -}}
{{ include "fintech-operator.selectorLabels" (dict "ctx" . "name" (include "fintech-operator.name" .) "component" "operator") }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "fintech-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fintech-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image.
*/}}
{{- define "fintech-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Everything the operator may do, in a Role or a ClusterRole. Keep it equal to the list at the
top of rbac.yaml; operator/tests/chart.rs checks each verb with `kubectl auth can-i`.
*/}}
{{- define "fintech-operator.rules" -}}
- apiGroups: ["fintech.io"]
  resources: ["fintechpipelines"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["fintech.io"]
  resources: ["fintechpipelines/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["fintech.io"]
  resources: ["fintechpipelines/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Labels of a piece of the development infrastructure. Call with
(dict "ctx" $ "name" NAME "version" IMAGE_TAG).
*/}}
{{- define "fintech-operator.infraLabels" -}}
{{ include "fintech-operator.labels" (dict "ctx" .ctx "name" .name "component" "infra" "version" .version) }}
{{- end }}

{{/*
Selector labels of a piece of the development infrastructure. Call with (dict "ctx" $ "name" NAME).
*/}}
{{- define "fintech-operator.infraSelectorLabels" -}}
{{ include "fintech-operator.selectorLabels" (dict "ctx" .ctx "name" .name "component" "infra") }}
{{- end }}

{{/*
The storageClassName line of a PersistentVolumeClaim, or nothing for the default class.
*/}}
{{- define "fintech-operator.storageClass" -}}
{{- with .Values.infra.storageClassName }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
A container security context for infrastructure containers. Call with
(dict "readOnlyRootFilesystem" BOOL).
*/}}
{{- define "fintech-operator.infraContainerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
A pod security context for infrastructure pods running as `uid` (the image's own user), with
volumes group-owned by it so a fresh PersistentVolume is writable. Call with (dict "uid" UID).
*/}}
{{- define "fintech-operator.infraPodSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A generated secret value kept across upgrades: the value of `key` in the live Secret `name`
when it exists, otherwise `length` random characters. Call with
(dict "ctx" $ "name" SECRET "key" KEY "length" N).
*/}}
{{- define "fintech-operator.keptSecret" -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $secret $secret.data (hasKey $secret.data .key) }}
{{- index $secret.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}
