{{/*
Checks JSON schema cannot express (values.schema.json does the rest; the render-config init
container checks the whole app config with the app's own model). Each failure says what to
change. Called from configmap-config.yaml, which every install renders.
*/}}
{{- define "rc.validate" -}}
{{- $config := include "rc.appConfig" . | fromJson -}}
{{- /* Closed by default: the gateway listens on the pod network, so somebody must be named. */ -}}
{{- if not (or .Values.auth.tenants .Values.auth.existingSecret .Values.auth.allowAnonymous) -}}
{{- fail "auth: no tenants, so every caller on the network would be served anonymously. Add auth.tenants (name: {apiKeySha256: ...}; `reasoning-cluster auth hash-key` prints a new key and its hash) or auth.existingSecret, or set auth.allowAnonymous: true to serve without keys on purpose" -}}
{{- end -}}
{{- range $group := list "cpuWorkers" "gpuWorkers" -}}
{{- $g := index $.Values $group -}}
{{- if $g.enabled -}}
{{- if gt ($g.minReplicas | int64) ($g.maxReplicas | int64) -}}
{{- fail (printf "%s: minReplicas (%d) is greater than maxReplicas (%d)" $group ($g.minReplicas | int64) ($g.maxReplicas | int64)) -}}
{{- end -}}
{{- if or (lt ($g.replicas | int64) ($g.minReplicas | int64)) (gt ($g.replicas | int64) ($g.maxReplicas | int64)) -}}
{{- fail (printf "%s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $group ($g.replicas | int64) ($g.minReplicas | int64) ($g.maxReplicas | int64)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $effort, $b := $config.efforts -}}
{{- if gt ($b.max_tokens_per_branch | int64) ($b.max_reasoning_tokens | int64) -}}
{{- fail (printf "config.efforts.%s: max_tokens_per_branch (%d) exceeds max_reasoning_tokens (%d): not even one branch fits" $effort ($b.max_tokens_per_branch | int64) ($b.max_reasoning_tokens | int64)) -}}
{{- end -}}
{{- if and (eq $b.strategy "single_chain") (ne ($b.max_branches | int64) 1) -}}
{{- fail (printf "config.efforts.%s: strategy single_chain grows exactly one chain: set max_branches: 1" $effort) -}}
{{- end -}}
{{- end -}}
{{- $generator := $config.deployments.generator -}}
{{- $numGpus := float64 ($generator.num_gpus | default 0) -}}
{{- $appScaled := $config.autoscaling.enabled | default false -}}
{{- if .Values.gpuWorkers.enabled -}}
{{- if ne $config.model.device "cuda" -}}
{{- fail "gpuWorkers.enabled: set config.model.device: cuda (with auto the builder, which runs on the CPU head, would not ask Ray for GPUs)" -}}
{{- end -}}
{{- if lt $numGpus 1.0 -}}
{{- fail "gpuWorkers.enabled: set config.deployments.generator.num_gpus to at least 1 (one vLLM engine per GPU)" -}}
{{- end -}}
{{- /* Generator replicas beyond the GPU group's capacity could never be placed. */ -}}
{{- $perPod := div (.Values.gpuWorkers.gpusPerPod | int64) ($numGpus | ceil | int64) -}}
{{- $capacity := mul $perPod (.Values.gpuWorkers.maxReplicas | int64) -}}
{{- $wanted := 0 -}}
{{- $source := "" -}}
{{- if $appScaled -}}
{{- $wanted = $config.autoscaling.generator.max_replicas | int64 -}}
{{- $source = "config.autoscaling.generator.max_replicas" -}}
{{- else if hasKey $generator "autoscaling_config" -}}
{{- $wanted = $generator.autoscaling_config.max_replicas | default 1 | int64 -}}
{{- $source = "config.deployments.generator.autoscaling_config.max_replicas" -}}
{{- else if ne (toString $generator.num_replicas) "auto" -}}
{{- $wanted = $generator.num_replicas | int64 -}}
{{- $source = "config.deployments.generator.num_replicas" -}}
{{- end -}}
{{- if gt $wanted $capacity -}}
{{- fail (printf "%s (%d) exceeds what the GPU workers can hold: gpuWorkers.maxReplicas (%d) x %d generator(s) per pod = %d; raise gpuWorkers.maxReplicas or gpusPerPod, or lower %s" $source $wanted (.Values.gpuWorkers.maxReplicas | int64) $perPod $capacity $source) -}}
{{- end -}}
{{- else -}}
{{- if gt $numGpus 0.0 -}}
{{- fail "config.deployments.generator.num_gpus > 0 needs GPU workers: set gpuWorkers.enabled: true" -}}
{{- end -}}
{{- if eq $config.model.device "cuda" -}}
{{- fail "config.model.device: cuda needs GPU workers: set gpuWorkers.enabled: true" -}}
{{- end -}}
{{- if not .Values.cpuWorkers.enabled -}}
{{- fail "cpuWorkers.enabled: false leaves no worker for the replicas (the head runs none): enable cpuWorkers or gpuWorkers" -}}
{{- end -}}
{{- end -}}
{{- if $appScaled -}}
{{- range $name := list "generator" "verifier" "planner" -}}
{{- $d := index $config.deployments $name -}}
{{- if or (hasKey $d "autoscaling_config") (eq (toString $d.num_replicas) "auto") -}}
{{- fail (printf "config.deployments.%s: config.autoscaling.enabled lets the app's effort-budget policy scale the %s; set its bounds in config.autoscaling.%s and remove autoscaling_config / num_replicas: auto here" $name $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.external.passwordSecret.name (not .Values.redis.external.url) -}}
{{- fail "redis.external.passwordSecret: set redis.external.url too (the password belongs to an external Redis)" -}}
{{- end -}}
{{- end -}}
