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

{{- define "rc.podLabels" -}}
{{ include "rc.labels" . }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Ray pods of this release (head and both worker groups), as a label selector. */}}
{{- define "rc.ray.podSelector" -}}
matchLabels:
  {{- include "rc.selectorLabels" . | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [ray-head, ray-cpu-worker, ray-gpu-worker]
{{- end -}}

{{/*
A pinned image reference: repository:tag, and @digest when one is set. ctx = dict "root" $
"image" <image values>; an empty tag means the chart's appVersion (the app's own images).
*/}}
{{- define "rc.image" -}}
{{- $ref := printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- if .image.digest -}}{{- $ref = printf "%s@%s" $ref .image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Redis. */}}
{{- define "rc.redis.internal" -}}
{{- if .Values.redis.external.url -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{- define "rc.redis.host" -}}
{{- printf "%s-redis.%s.svc" (include "rc.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "rc.redis.secretName" -}}
{{- default (printf "%s-redis" (include "rc.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{/* The Secret and key holding the Redis password the Ray pods use, as a dict (empty: none). */}}
{{- define "rc.redis.passwordRef" -}}
{{- if eq (include "rc.redis.internal" .) "true" -}}
{{- dict "name" (include "rc.redis.secretName" .) "key" .Values.redis.auth.existingSecretPasswordKey | toJson -}}
{{- else if .Values.redis.external.passwordSecret.name -}}
{{- toJson .Values.redis.external.passwordSecret -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- end -}}

{{/* Where the Ray pods find the Redis password: a file from the Secret, never an env var. */}}
{{- define "rc.redis.passwordDir" -}}/var/run/reasoning-cluster/redis{{- end -}}

{{/*
The app's config file, as JSON: the packaged defaults (files/default_config.yaml, a link to
cluster/default_config.yaml), `config` values over them, and what the chart owns (Redis, the
HTTP bind, no auth: that comes from the auth Secret). The app merges it over the same
defaults again when it loads it, so the result is the same.
*/}}
{{- define "rc.appConfig" -}}
{{- $config := mergeOverwrite (.Files.Get "files/default_config.yaml" | fromYaml) (deepCopy .Values.config) -}}
{{- $_ := unset $config "auth" -}}
{{- $redis := dict "url" (ternary (printf "redis://%s:6379/0" (include "rc.redis.host" .)) .Values.redis.external.url (eq (include "rc.redis.internal" .) "true")) -}}
{{- if include "rc.redis.passwordRef" . | fromJson -}}
{{- $_ := set $redis "password_file" (printf "%s/password" (include "rc.redis.passwordDir" .)) -}}
{{- end -}}
{{- $_ := set $config "redis" (mergeOverwrite (get $config "redis" | default dict) $redis) -}}
{{- $http := dict "host" "0.0.0.0" "port" (.Values.serve.httpPort | int64) -}}
{{- $_ := set $config "http" (mergeOverwrite (get $config "http" | default dict) $http) -}}
{{- $grpc := dict "enabled" (not (empty .Values.serve.grpcServicerFunctions)) "port" (.Values.serve.grpcPort | int64) -}}
{{- $_ := set $config "grpc" (mergeOverwrite (get $config "grpc" | default dict) $grpc) -}}
{{- toJson $config -}}
{{- end -}}

{{/* Security context of every container: no privilege, nothing written outside its volumes. */}}
{{- define "rc.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Security context of the Ray pods: user ray (uid 1000) of both images. */}}
{{- define "rc.ray.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Volumes every Ray pod shares: config, auth, rendered config, the Redis password, the writable
directories of a read-only root filesystem (/tmp for Ray's session and logs, /home/ray for
caches), shm, models.
*/}}
{{- define "rc.ray.volumes" -}}
- name: rc-config
  configMap:
    name: {{ include "rc.fullname" . }}-config
- name: rc-auth
  secret:
    secretName: {{ default (printf "%s-auth" (include "rc.fullname" .)) .Values.auth.existingSecret }}
    defaultMode: 0440
- name: rc-rendered-config
  emptyDir:
    sizeLimit: 16Mi
{{- with include "rc.redis.passwordRef" . | fromJson }}
- name: rc-redis-password
  secret:
    secretName: {{ .name }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: password
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.rayCluster.tmpSize }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.rayCluster.homeSize }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.rayCluster.shmSize }}
{{- with .Values.models.volume.claimName }}
- name: models
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "rc.ray.redisPasswordMount" -}}
{{- if include "rc.redis.passwordRef" . | fromJson -}}
- name: rc-redis-password
  mountPath: {{ include "rc.redis.passwordDir" . }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "rc.ray.mounts" -}}
- name: rc-rendered-config
  mountPath: /etc/reasoning-cluster
  readOnly: true
{{- with include "rc.ray.redisPasswordMount" . }}
{{ . }}
{{- end }}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/ray
- name: dshm
  mountPath: /dev/shm
{{- if .Values.models.volume.claimName }}
- name: models
  mountPath: {{ .Values.models.volume.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The init container merges the ConfigMap's config with the auth Secret into
/etc/reasoning-cluster/config.yaml and validates it with the app's own loader, so a pod with a
config the app would refuse never starts Ray. ctx = dict "root" $ "image" <image values>.
*/}}
{{- define "rc.ray.initContainer" -}}
- name: render-config
  image: {{ include "rc.image" . | quote }}
  imagePullPolicy: {{ .image.pullPolicy }}
  command:
    - python
    - /opt/rc-config/merge_config.py
    - /opt/rc-config/config.yaml
    - /opt/rc-auth/auth.yaml
    - /etc/reasoning-cluster/config.yaml
  securityContext:
    {{- include "rc.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: rc-config
      mountPath: /opt/rc-config
      readOnly: true
    - name: rc-auth
      mountPath: /opt/rc-auth
      readOnly: true
    - name: rc-rendered-config
      mountPath: /etc/reasoning-cluster
    {{- with include "rc.ray.redisPasswordMount" .root }}
    {{- . | nindent 4 }}
    {{- end }}
    - name: tmp
      mountPath: /tmp
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

{{/*
The pod template of one Ray group. ctx = dict "root" $ "group" <group values> "image" <image
values> "component" <ray-head|ray-cpu-worker|ray-gpu-worker> "gpus" <GPUs per pod, 0: none>.
*/}}
{{- define "rc.ray.podTemplate" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- $head := eq .component "ray-head" -}}
{{- $image := dict "root" $root "image" .image -}}
metadata:
  labels:
    {{- include "rc.podLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap-config.yaml") $root | sha256sum }}
    checksum/auth: {{ include (print $root.Template.BasePath "/secret-auth.yaml") $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  # Ray needs no Kubernetes API; only the head's autoscaler does, and it gets its own token
  # (autoscalerOptions in rayservice.yaml).
  automountServiceAccountToken: false
  securityContext:
    {{- include "rc.ray.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.image.pullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  initContainers:
    {{- include "rc.ray.initContainer" $image | nindent 4 }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "rc.image" $image | quote }}
      imagePullPolicy: {{ .image.pullPolicy }}
      env:
        # Caches (vLLM, Hugging Face, torch) on the writable home volume.
        - name: HOME
          value: /home/ray
        - name: VLLM_NO_USAGE_STATS
          value: "1"
      ports:
        {{- include "rc.ray.ports" $root | nindent 8 }}
        {{- if $head }}
        - name: gcs
          containerPort: 6379
          protocol: TCP
        - name: dashboard
          containerPort: 8265
          protocol: TCP
        - name: client
          containerPort: 10001
          protocol: TCP
        {{- end }}
      securityContext:
        {{- include "rc.containerSecurityContext" $root | nindent 8 }}
      resources:
        {{- if .gpus }}
        requests:
          {{- with $group.resources.requests }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
          nvidia.com/gpu: {{ .gpus }}
        limits:
          {{- with $group.resources.limits }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
          nvidia.com/gpu: {{ .gpus }}
        {{- else }}
        {{- toYaml $group.resources | nindent 8 }}
        {{- end }}
      volumeMounts:
        {{- include "rc.ray.mounts" $root | nindent 8 }}
  volumes:
    {{- include "rc.ray.volumes" $root | nindent 4 }}
    {{- if and $head $root.Values.rayCluster.enableInTreeAutoscaling }}
    {{- include "rc.autoscaler.tokenVolume" $root | nindent 4 }}
    {{- end }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
The Kubernetes API token of the head's autoscaler sidecar: the pod mounts no service-account
token, so the autoscaler alone gets this projected one (what Kubernetes would have mounted).
*/}}
{{- define "rc.autoscaler.tokenVolume" -}}
- name: autoscaler-api-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}
