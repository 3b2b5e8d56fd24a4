{{/* Names and labels. */}}
{{- define "rc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rc.fullname" -}}
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

{{- define "rc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reasoning-cluster
{{- end -}}

{{/* Images: ctx = dict "root" $ "image" .Values.image.cpu */}}
{{- define "rc.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Redis. */}}
{{- define "rc.redis.internal" -}}
{{- if or .Values.redis.external.url .Values.redis.external.existingSecret -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{- define "rc.redis.host" -}}
{{- printf "%s-redis.%s.svc" (include "rc.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "rc.redis.secretName" -}}
{{- default (printf "%s-redis" (include "rc.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* Env vars that point the app at Redis: REDIS_URL overrides the config's redis.url. */}}
{{- define "rc.redis.env" -}}
{{- if eq (include "rc.redis.internal" .) "true" }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "rc.redis.secretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "rc.redis.host" .) | quote }}
{{- else if .Values.redis.external.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
{{- else }}
- name: REDIS_URL
  value: {{ .Values.redis.external.url | quote }}
{{- end }}
{{- end -}}

{{/* One Serve deployment's settings in the app config. ctx = the deployment's values. */}}
{{- define "rc.deploymentSettings" -}}
num_replicas: {{ .replicas | int64 }}
num_cpus: {{ .numCpus | toJson }}
num_gpus: {{ .numGpus | toJson }}
max_ongoing_requests: {{ .maxOngoingRequests | int64 }}
{{- end -}}

{{/*
One Serve deployment entry of serveConfigV2 (a dict). ctx = dict "name" N "v" values "app" B,
where B is true when the app's own autoscaling policy sets this deployment's replicas (then
neither num_replicas nor autoscaling_config may override it here).
*/}}
{{- define "rc.serveDeployment" -}}
{{- $v := .v -}}
{{- $d := dict "name" .name -}}
{{- if .app -}}
{{- else if $v.autoscaling.enabled -}}
{{- $a := dict "min_replicas" ($v.autoscaling.minReplicas | int64) "max_replicas" ($v.autoscaling.maxReplicas | int64) "target_ongoing_requests" $v.autoscaling.targetOngoingRequests -}}
{{- if not (kindIs "invalid" $v.autoscaling.initialReplicas) -}}
{{- $_ := set $a "initial_replicas" ($v.autoscaling.initialReplicas | int64) -}}
{{- end -}}
{{- if $v.autoscaling.policyFunction -}}
{{- $_ := set $a "policy" (dict "policy_function" $v.autoscaling.policyFunction) -}}
{{- end -}}
{{- $_ := set $d "num_replicas" "auto" -}}
{{- $_ := set $d "autoscaling_config" $a -}}
{{- else -}}
{{- $_ := set $d "num_replicas" ($v.replicas | int64) -}}
{{- end -}}
{{- $_ := set $d "max_ongoing_requests" ($v.maxOngoingRequests | int64) -}}
{{- toJson $d -}}
{{- end -}}

{{/* Volumes and mounts every Ray pod shares: config, auth, rendered config, shm, models. */}}
{{- define "rc.ray.volumes" -}}
- name: rc-config
  configMap:
    name: {{ include "rc.fullname" . }}-config
- name: rc-auth
  secret:
    secretName: {{ default (printf "%s-auth" (include "rc.fullname" .)) .Values.auth.existingSecret }}
- name: rc-rendered-config
  emptyDir:
    sizeLimit: 16Mi
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.rayCluster.shmSize }}
{{- with .Values.models.generator.volume.claimName }}
- name: models
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "rc.ray.mounts" -}}
- name: rc-rendered-config
  mountPath: /etc/reasoning-cluster
  readOnly: true
- name: dshm
  mountPath: /dev/shm
{{- if .Values.models.generator.volume.claimName }}
- name: models
  mountPath: {{ .Values.models.generator.volume.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The init container merges the ConfigMap's config with the auth Secret into
/etc/reasoning-cluster/config.yaml and validates it with the app's own model, so a pod with a
config the app would refuse never starts Ray. ctx = dict "root" $ "image" <image values>.
*/}}
{{- define "rc.ray.initContainer" -}}
- name: render-config
  image: {{ include "rc.image" . }}
  imagePullPolicy: {{ .image.pullPolicy }}
  command:
    - python
    - /opt/rc-config/merge_config.py
    - /opt/rc-config/config.yaml
    - /opt/rc-auth/auth.yaml
    - /etc/reasoning-cluster/config.yaml
  volumeMounts:
    - name: rc-config
      mountPath: /opt/rc-config
      readOnly: true
    - name: rc-auth
      mountPath: /opt/rc-auth
      readOnly: true
    - name: rc-rendered-config
      mountPath: /etc/reasoning-cluster
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {cpu: 500m, memory: 512Mi}
{{- end -}}

{{/* Container ports of every Ray pod. */}}
{{- define "rc.ray.ports" -}}
- name: serve
  containerPort: {{ .Values.serve.httpPort }}
  protocol: TCP
- name: grpc
  containerPort: {{ .Values.serve.grpcPort }}
  protocol: TCP
- name: metrics
  containerPort: 8080
  protocol: TCP
{{- end -}}

{{- define "rc.podLabels" -}}
{{ include "rc.labels" . }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
