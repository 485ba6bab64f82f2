{{- define "ingestion.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "ingestion.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "ingestion.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ingestion.serviceAccount" -}}
{{- default (include "ingestion.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* repository@digest when a digest is set, else repository:tag (the tag defaults to appVersion). */}}
{{- define "ingestion.image" -}}
{{- if .digest }}{{ printf "%s@%s" .repository .digest }}
{{- else }}{{ printf "%s:%s" .repository (default $.appVersion .tag) }}{{ end }}
{{- end }}

{{/* The operator's permissions: every verb it uses, and nothing more (tested). */}}
{{- define "ingestion.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [{{ include "ingestion.fullname" . }}]
  verbs: [get, update]
{{- end }}

{{- define "ingestion.rules" -}}
- apiGroups: [ingestion.dev]
  resources: [ingestionschedules]
  verbs: [get, list, watch]
- apiGroups: [ingestion.dev]
  resources: [ingestionschedules/status, ingestionbackfills/status, ingestionupstreams/status]
  verbs: [patch]
- apiGroups: [ingestion.dev]
  resources: [ingestionbackfills, ingestionupstreams]
  verbs: [get, list, watch]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]  # list: why a run's Job made no pod (FailedCreate) or its volume did not mount
{{- end }}

{{/* The share of runs that did not succeed over .window, per schedule: failed, partial and abandoned
     runs are all misses, as in the SLO, the report and the dashboard (ingestion_runs_total is a
     counter read from each store). */}}
{{/* Keeps a schedule's alert quiet while the operator says the schedule is suspended (paused or disabled).
The operator's series name the schedule's namespace schedule_namespace (its own target's namespace label is the operator's). */}}
{{- define "ingestion.unlessSuspended" -}}
unless on (namespace, schedule) (label_replace(max by (schedule_namespace, schedule) (ingestion_operator_schedule_suspended), "namespace", "$1", "schedule_namespace", "(.*)") == 1)
{{- end }}

{{- define "ingestion.burnRate" -}}
(sum by (namespace, schedule) (increase(ingestion_runs_total{outcome!="succeeded"}[{{ .window }}])) / sum by (namespace, schedule) (increase(ingestion_runs_total[{{ .window }}])))
{{- end }}

{{/* The labels the operator puts on every job pod (ingestion_operator.render.labels_for, backfill_labels; tested). */}}
{{- define "ingestion.jobSelector" -}}
app.kubernetes.io/name: ingestion-job
app.kubernetes.io/managed-by: ingestion-operator
{{- end }}

{{/* NetworkPolicy egress rules, one per destination {cidrs, peers, ports, protocols}; none for a
     destination that names no address (an empty `to` would allow every destination). */}}
{{- define "ingestion.egressRules" -}}
{{- range $d := . }}
{{- if or $d.cidrs $d.peers }}
- to:
  {{- range $d.cidrs }}
    - ipBlock: {cidr: {{ . }}}
  {{- end }}
  {{- with $d.peers }}
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
  {{- range $port := $d.ports }}
  {{- range $protocol := ($d.protocols | default (list "TCP")) }}
    - {protocol: {{ $protocol }}, port: {{ $port }}}
  {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}
