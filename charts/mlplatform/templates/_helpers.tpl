{{/* Names, labels and the few derived values every template shares: each defined once, here. */}}

{{- define "mlplatform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlplatform.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (dict "root" $ "component" "mlflow"). */}}
{{- define "mlplatform.componentName" -}}
{{- printf "%s-%s" (include "mlplatform.fullname" .root) .component -}}
{{- end -}}

{{- define "mlplatform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlplatform.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mlplatform.labels" -}}
{{ include "mlplatform.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mlplatform
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference from {repository, tag}; the platform's own images default to appVersion. */}}
{{- define "mlplatform.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The "restricted" Pod Security Standard, for a pod and for a container. */}}
{{- define "mlplatform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "mlplatform.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "mlplatform.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The tracking server as pods and the operator reach it. */}}
{{- define "mlplatform.mlflow.host" -}}
{{- printf "%s.%s.svc" (include "mlplatform.componentName" (dict "root" . "component" "mlflow")) .Release.Namespace -}}
{{- end -}}

{{- define "mlplatform.mlflow.url" -}}
{{- printf "http://%s:%d" (include "mlplatform.mlflow.host" .) (int .Values.mlflow.service.port) -}}
{{- end -}}

{{/*
Host headers the server accepts: its Service names (with any port), localhost, the Ingress host, and, as
MLflow allows by default, private IP addresses (a Service or pod IP).
*/}}
{{- define "mlplatform.mlflow.allowedHosts" -}}
{{- $svc := include "mlplatform.componentName" (dict "root" . "component" "mlflow") -}}
{{- $hosts := list -}}
{{- range $name := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) "localhost" "127.0.0.1" -}}
{{- $hosts = concat $hosts (list $name (printf "%s:*" $name)) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "10.*" "192.168.*") -}}
{{- range $second := untilStep 16 32 1 -}}
{{- $hosts = append $hosts (printf "172.%d.*" $second) -}}
{{- end -}}
{{- if .Values.mlflow.ingress.enabled -}}
{{- $hosts = append $hosts .Values.mlflow.ingress.host -}}
{{- end -}}
{{- join "," (concat $hosts .Values.mlflow.allowedHosts) -}}
{{- end -}}

{{/* The database: the bundled PostgreSQL's Service, or the external one. */}}
{{- define "mlplatform.database.type" -}}
{{- if .Values.postgresql.enabled -}}postgresql{{- else -}}{{ .Values.externalDatabase.type }}{{- end -}}
{{- end -}}

{{- define "mlplatform.database.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "mlplatform.componentName" (dict "root" . "component" "postgresql") -}}
{{- else -}}
{{- .Values.externalDatabase.host -}}
{{- end -}}
{{- end -}}

{{- define "mlplatform.database.port" -}}
{{- if .Values.postgresql.enabled -}}5432
{{- else if .Values.externalDatabase.port -}}{{ .Values.externalDatabase.port }}
{{- else if eq .Values.externalDatabase.type "mysql" -}}3306
{{- else -}}5432
{{- end -}}
{{- end -}}

{{- define "mlplatform.database.name" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.database }}{{- else -}}{{ .Values.externalDatabase.database }}{{- end -}}
{{- end -}}

{{- define "mlplatform.database.user" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.username }}{{- else -}}{{ .Values.externalDatabase.username }}{{- end -}}
{{- end -}}

{{/* The Secret and key holding the database password. */}}
{{- define "mlplatform.database.secretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- default (include "mlplatform.componentName" (dict "root" . "component" "postgresql")) .Values.postgresql.auth.existingSecret -}}
{{- else -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "mlplatform.database.secretKey" -}}
{{- if .Values.postgresql.enabled -}}{{ .Values.postgresql.auth.passwordKey }}{{- else -}}{{ .Values.externalDatabase.passwordKey }}{{- end -}}
{{- end -}}

{{/* The password-free backend store URI (the password reaches the server from a Secret, as an env var). */}}
{{- define "mlplatform.database.uri" -}}
{{- $driver := ternary "mysql+pymysql" "postgresql+psycopg2" (eq (include "mlplatform.database.type" .) "mysql") -}}
{{- printf "%s://%s@%s:%s/%s" $driver (include "mlplatform.database.user" .) (include "mlplatform.database.host" .) (include "mlplatform.database.port" .) (include "mlplatform.database.name" .) -}}
{{- end -}}

{{/* The environment that points the server image at the database; the password from its Secret. */}}
{{- define "mlplatform.database.env" -}}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ include "mlplatform.database.uri" . | quote }}
- name: MLPLATFORM_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mlplatform.database.secretName" . }}
      key: {{ include "mlplatform.database.secretKey" . }}
{{- if eq (include "mlplatform.database.type" .) "postgresql" }}
# libpq reads it too: the basic-auth app's user store connects with the same password-free URI.
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mlplatform.database.secretName" . }}
      key: {{ include "mlplatform.database.secretKey" . }}
{{- end }}
{{- end -}}

{{/* The object store: the bundled MinIO, an external S3 or Azure Blob Storage. */}}
{{- define "mlplatform.artifacts.destination" -}}
{{- if .Values.externalAzure.enabled -}}
{{- $path := ternary "" (printf "/%s" (trimAll "/" .Values.externalAzure.prefix)) (empty .Values.externalAzure.prefix) -}}
{{- printf "wasbs://%s@%s.blob.core.windows.net%s" .Values.externalAzure.container .Values.externalAzure.storageAccount $path -}}
{{- else -}}
{{- $path := ternary "" (printf "/%s" (trimAll "/" .Values.artifacts.prefix)) (empty .Values.artifacts.prefix) -}}
{{- printf "s3://%s%s" .Values.artifacts.bucket $path -}}
{{- end -}}
{{- end -}}

{{- define "mlplatform.minio.secretName" -}}
{{- default (include "mlplatform.componentName" (dict "root" . "component" "minio")) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{- define "mlplatform.artifacts.env" -}}
- name: MLFLOW_ARTIFACTS_DESTINATION
  value: {{ include "mlplatform.artifacts.destination" . | quote }}
{{- if .Values.externalAzure.enabled }}
{{- if .Values.externalAzure.accessKeyKey }}
- name: AZURE_STORAGE_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalAzure.existingSecret }}, key: {{ .Values.externalAzure.accessKeyKey }}}
{{- else }}
- name: AZURE_STORAGE_CONNECTION_STRING
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalAzure.existingSecret }}, key: {{ .Values.externalAzure.connectionStringKey }}}
{{- end }}
{{- else if .Values.minio.enabled }}
# Fully qualified: MLflow hands model servers in other namespaces presigned URLs on this endpoint.
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ printf "http://%s.%s.svc:9000" (include "mlplatform.componentName" (dict "root" . "component" "minio")) .Release.Namespace | quote }}
- name: AWS_DEFAULT_REGION
  value: us-east-1
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "mlplatform.minio.secretName" . }}, key: {{ .Values.minio.auth.userKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "mlplatform.minio.secretName" . }}, key: {{ .Values.minio.auth.passwordKey }}}
{{- else }}
{{- with .Values.externalS3.endpoint }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.externalS3.region | quote }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalS3.existingSecret }}, key: {{ .Values.externalS3.accessKeyIdKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.externalS3.existingSecret }}, key: {{ .Values.externalS3.secretAccessKeyKey }}}
{{- end }}
{{- end -}}

{{/* Values that cannot work together, refused with a message naming them. */}}
{{- define "mlplatform.validate" -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.enabled -}}
{{- fail "postgresql.enabled and externalDatabase.enabled are both true: choose the bundled PostgreSQL or your own database" -}}
{{- end -}}
{{- if not (or .Values.postgresql.enabled .Values.externalDatabase.enabled) -}}
{{- fail "no database: set postgresql.enabled=true, or externalDatabase.enabled=true with its host and existingSecret" -}}
{{- end -}}
{{- if .Values.externalDatabase.enabled -}}
{{- if not .Values.externalDatabase.existingSecret -}}
{{- fail "externalDatabase.existingSecret is required when externalDatabase.enabled is true: the Secret holding the database password" -}}
{{- end -}}
{{- if not .Values.externalDatabase.host -}}
{{- fail "externalDatabase.host is required when externalDatabase.enabled is true" -}}
{{- end -}}
{{- end -}}
{{- $stores := 0 -}}
{{- range $store := list .Values.minio.enabled .Values.externalS3.enabled .Values.externalAzure.enabled -}}
{{- if $store -}}{{- $stores = add1 $stores -}}{{- end -}}
{{- end -}}
{{- if gt $stores 1 -}}
{{- fail "more than one artifact store: enable exactly one of minio.enabled, externalS3.enabled and externalAzure.enabled" -}}
{{- end -}}
{{- if eq $stores 0 -}}
{{- fail "no artifact store: enable one of minio.enabled, externalS3.enabled and externalAzure.enabled" -}}
{{- end -}}
{{- if and .Values.externalS3.enabled (not .Values.externalS3.existingSecret) -}}
{{- fail "externalS3.existingSecret is required when externalS3.enabled is true: the Secret holding the access keys" -}}
{{- end -}}
{{- if .Values.externalAzure.enabled -}}
{{- if not .Values.externalAzure.existingSecret -}}
{{- fail "externalAzure.existingSecret is required when externalAzure.enabled is true: the Secret holding the connection string or account key" -}}
{{- end -}}
{{- if not .Values.externalAzure.storageAccount -}}
{{- fail "externalAzure.storageAccount is required when externalAzure.enabled is true" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (not .Values.mlflow.auth.existingSecret) -}}
{{- fail "mlflow.auth.existingSecret is required when mlflow.auth.enabled is true: the Secret with the admin username and password" -}}
{{- end -}}
{{- if and .Values.mlflow.auth.enabled (eq (include "mlplatform.database.type" .) "mysql") -}}
{{- fail "mlflow.auth.enabled needs a PostgreSQL backend (externalDatabase.type is mysql)" -}}
{{- end -}}
{{- end -}}

{{- define "mlplatform.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "mlplatform.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}
