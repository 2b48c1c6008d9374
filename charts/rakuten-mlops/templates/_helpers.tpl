{{/* The chart name, overridable with nameOverride. */}}
{{- define "rakuten-mlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object: "<release>-rakuten-mlops" (docs/architecture.md names the
API Deployment "<release>-rakuten-mlops-api"). Kept to 45 characters so that component
suffixes fit the 63-character limit of names and labels.
*/}}
{{- define "rakuten-mlops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "rakuten-mlops.name" .) | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Name of one component's objects: (list $ "api") -> "<fullname>-api". */}}
{{- define "rakuten-mlops.componentName" -}}
{{- $ctx := index . 0 }}
{{- printf "%s-%s" (include "rakuten-mlops.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart label value "name-version". */}}
{{- define "rakuten-mlops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; (list $ "api"). */}}
{{- define "rakuten-mlops.labels" -}}
{{- $ctx := index . 0 -}}
helm.sh/chart: {{ include "rakuten-mlops.chart" $ctx }}
{{ include "rakuten-mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: rakuten-mlops
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (never the chart version); (list $ "api"). */}}
{{- define "rakuten-mlops.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "rakuten-mlops.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Reference of the application image: registry/repository@digest or :tag (appVersion by default). */}}
{{- define "rakuten-mlops.image" -}}
{{- include "rakuten-mlops.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{/* Reference of the MLflow image. */}}
{{- define "rakuten-mlops.mlflowImage" -}}
{{- include "rakuten-mlops.imageRef" (list .Values.mlflow.image .Chart.AppVersion) }}
{{- end }}

{{/* (list imageValues defaultTag) -> image reference; refuses "latest". */}}
{{- define "rakuten-mlops.imageRef" -}}
{{- $img := index . 0 }}
{{- $tag := default (index . 1) $img.tag }}
{{- if eq $tag "latest" }}{{ fail (printf "image %s: the tag \"latest\" is not allowed; pin a version" $img.repository) }}{{ end }}
{{- $repo := $img.repository }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $img.repository }}{{ end }}
{{- if $img.digest }}{{ printf "%s@%s" $repo $img.digest }}{{ else }}{{ printf "%s:%s" $repo $tag }}{{ end }}
{{- end }}

{{/* Third-party image reference (postgres, minio, mc): repository:tag, plus @digest when given. */}}
{{- define "rakuten-mlops.simpleImage" -}}
{{- if eq .tag "latest" }}{{ fail (printf "image %s: the tag \"latest\" is not allowed; pin a version" .repository) }}{{ end }}
{{- printf "%s:%s" .repository .tag }}{{ with .digest }}@{{ . }}{{ end }}
{{- end }}

{{/* Pod security context of the chart's own images. */}}
{{- define "rakuten-mlops.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Container security context of every container. */}}
{{- define "rakuten-mlops.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
A secret value kept across upgrades: the current value from the cluster when the Secret
exists (lookup), otherwise a new random one. `helm template` has no cluster: always random.
(list $ secretName key length)
*/}}
{{- define "rakuten-mlops.keptRandom" -}}
{{- $ctx := index . 0 }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace (index . 1) }}
{{- if and $existing $existing.data (hasKey $existing.data (index . 2)) }}
{{- index $existing.data (index . 2) | b64dec }}
{{- else }}
{{- randAlphaNum (index . 3) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the data DB's URL (keys database-url, mlflow-database-url). */}}
{{- define "rakuten-mlops.databaseSecret" -}}
{{- if .Values.postgres.enabled }}
{{- default (include "rakuten-mlops.componentName" (list . "postgres")) .Values.postgres.existingSecret }}
{{- else }}
{{- required "postgres.enabled is false: set externalDatabase.existingSecret (a Secret with key database-url)" .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding MinIO's root credentials. */}}
{{- define "rakuten-mlops.minioSecret" -}}
{{- default (include "rakuten-mlops.componentName" (list . "minio")) .Values.minio.existingSecret }}
{{- end }}

{{/* Name of the Secret holding the admin token. */}}
{{- define "rakuten-mlops.adminSecret" -}}
{{- default (include "rakuten-mlops.componentName" (list . "admin")) .Values.api.admin.existingSecret }}
{{- end }}

{{/* Name of the Secret holding the feedback token. */}}
{{- define "rakuten-mlops.feedbackSecret" -}}
{{- default (include "rakuten-mlops.componentName" (list . "feedback")) .Values.api.feedback.existingSecret }}
{{- end }}

{{/* In-cluster URL of the MLflow tracking server (ours or external). */}}
{{- define "rakuten-mlops.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s:5000" (include "rakuten-mlops.componentName" (list . "mlflow")) }}
{{- else }}
{{- required "mlflow.enabled is false: set externalMlflow.trackingUri" .Values.externalMlflow.trackingUri }}
{{- end }}
{{- end }}

{{/*
Environment shared by every pod running the CLI (API, operator, control room, helm test):
data DB URL and MLflow URI, no passwords in plain text.
*/}}
{{- define "rakuten-mlops.cliEnv" -}}
- name: HOME
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: RAKUTEN_HOME
  value: /tmp/rakuten
- name: RAKUTEN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "rakuten-mlops.databaseSecret" . }}
      key: database-url
- name: MLFLOW_TRACKING_URI
  value: {{ include "rakuten-mlops.trackingUri" . | quote }}
- name: RAKUTEN_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}

{{/* Writable volumes of a read-only CLI container: /tmp (RAKUTEN_HOME, caches). */}}
{{- define "rakuten-mlops.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "rakuten-mlops.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{/* NetworkPolicy peer: the pods of one component of this release; (list release component). */}}
{{- define "rakuten-mlops.peer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ index . 0 }}
      app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Whether the landing zone is the chart's MinIO (no URL or endpoint of another S3 given). */}}
{{- define "rakuten-mlops.landingOnMinio" -}}
{{- if and .Values.minio.enabled (not .Values.workflows.landingZone.endpoint) }}true{{ end }}
{{- end }}

{{/* s3://BUCKET/PREFIX of the landing zone. */}}
{{- define "rakuten-mlops.landingUrl" -}}
{{- if .Values.workflows.landingZone.url }}
{{- .Values.workflows.landingZone.url }}
{{- else if .Values.minio.enabled }}
{{- printf "s3://%s/drops" .Values.minio.landingBucket }}
{{- else }}
{{- fail "minio.enabled is false: set workflows.landingZone.url (s3://BUCKET/PREFIX), or workflows.source=volume" }}
{{- end }}
{{- end }}

{{/* The catalogue that catalogue-rescore scores: s3://BUCKET/KEY.csv or .parquet (default: in the landing bucket). */}}
{{- define "rakuten-mlops.catalogueUrl" -}}
{{- if .Values.workflows.catalogueRescore.input }}
{{- .Values.workflows.catalogueRescore.input }}
{{- else }}
{{- printf "%s/catalogue/X_catalogue.csv" (regexFind "^s3://[^/]+" (include "rakuten-mlops.landingUrl" .)) }}
{{- end }}
{{- end }}

{{/* Where catalogue-rescore writes, s3://BUCKET/PREFIX, one folder per night (default: MinIO's results bucket, else the landing bucket). */}}
{{- define "rakuten-mlops.resultsUrl" -}}
{{- if .Values.workflows.catalogueRescore.output }}
{{- .Values.workflows.catalogueRescore.output | trimSuffix "/" }}
{{- else if .Values.minio.enabled }}
{{- printf "s3://%s/catalogue-rescore" .Values.minio.resultsBucket }}
{{- else }}
{{- printf "%s/catalogue-rescore" (regexFind "^s3://[^/]+" (include "rakuten-mlops.landingUrl" .)) }}
{{- end }}
{{- end }}

{{/* S3 endpoint of the landing zone (empty: the SDK's default). */}}
{{- define "rakuten-mlops.landingEndpoint" -}}
{{- if .Values.workflows.landingZone.endpoint }}
{{- .Values.workflows.landingZone.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "rakuten-mlops.componentName" (list . "minio")) }}
{{- end }}
{{- end }}

{{/*
Secret with the landing zone's keys: the user's, or "<fullname>-landing", which the chart
generates with minio.enabled. Workflow pods reference it as optional: without MinIO and
without existingSecret it does not exist and credentials come from elsewhere (a pod identity).
*/}}
{{- define "rakuten-mlops.landingSecret" -}}
{{- default (include "rakuten-mlops.componentName" (list . "landing")) .Values.workflows.landingZone.existingSecret }}
{{- end }}

{{/* Env of the pods that talk to the Argo server (API retraining, control room). */}}
{{- define "rakuten-mlops.argoEnv" -}}
{{- with .Values.workflows.argoServer }}
- name: ARGO_SERVER
  value: {{ . | quote }}
{{- end }}
{{- if .Values.workflows.argoInsecureSkipVerify }}
- name: ARGO_INSECURE_SKIP_VERIFY
  value: "true"
{{- end }}
{{- end }}
