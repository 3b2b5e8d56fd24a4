{{/*
Checks JSON schema cannot express (values.schema.json does the rest). Each failure says what to
change. Called from configmap-config.yaml, which every install renders.
*/}}
{{- define "rc.validate" -}}
{{- range $name := list "gateway" "runner" "planner" "verifier" "generator" -}}
{{- $a := (index $.Values $name).autoscaling -}}
{{- if $a.enabled -}}
{{- if gt ($a.minReplicas | int64) ($a.maxReplicas | int64) -}}
{{- fail (printf "%s.autoscaling: minReplicas (%d) is greater than maxReplicas (%d)" $name ($a.minReplicas | int64) ($a.maxReplicas | int64)) -}}
{{- end -}}
{{- if not (kindIs "invalid" $a.initialReplicas) -}}
{{- if or (lt ($a.initialReplicas | int64) ($a.minReplicas | int64)) (gt ($a.initialReplicas | int64) ($a.maxReplicas | int64)) -}}
{{- fail (printf "%s.autoscaling: initialReplicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $name ($a.initialReplicas | int64) ($a.minReplicas | int64) ($a.maxReplicas | int64)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
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
{{- range $effort, $b := .Values.efforts -}}
{{- if gt ($b.max_tokens_per_branch | int64) ($b.max_reasoning_tokens | int64) -}}
{{- fail (printf "efforts.%s: max_tokens_per_branch (%d) exceeds max_reasoning_tokens (%d): not even one branch fits" $effort ($b.max_tokens_per_branch | int64) ($b.max_reasoning_tokens | int64)) -}}
{{- end -}}
{{- if and (eq $b.strategy "single_chain") (ne ($b.max_branches | int64) 1) -}}
{{- fail (printf "efforts.%s: strategy single_chain grows exactly one chain: set max_branches: 1" $effort) -}}
{{- end -}}
{{- end -}}
{{- if .Values.gpuWorkers.enabled -}}
{{- if ne .Values.models.generator.device "cuda" -}}
{{- fail "gpuWorkers.enabled: set models.generator.device: cuda (with auto the builder, which runs on the CPU head, would not ask Ray for GPUs)" -}}
{{- end -}}
{{- if lt (float64 .Values.generator.numGpus) 1.0 -}}
{{- fail "gpuWorkers.enabled: set generator.numGpus to at least 1 (one vLLM engine per GPU)" -}}
{{- end -}}
{{- /* Generator replicas beyond the GPU group's capacity could never be placed. */ -}}
{{- $perPod := div (.Values.gpuWorkers.gpusPerPod | int64) (.Values.generator.numGpus | ceil | int64) -}}
{{- $capacity := mul $perPod (.Values.gpuWorkers.maxReplicas | int64) -}}
{{- $wanted := .Values.generator.replicas | int64 -}}
{{- $source := "generator.replicas" -}}
{{- if (.Values.appAutoscaling | default dict).enabled -}}
{{- $wanted = ((.Values.appAutoscaling.generator | default dict).max_replicas | default 4) | int64 -}}
{{- $source = "appAutoscaling.generator.max_replicas" -}}
{{- else if .Values.generator.autoscaling.enabled -}}
{{- $wanted = .Values.generator.autoscaling.maxReplicas | int64 -}}
{{- $source = "generator.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if gt $wanted $capacity -}}
{{- fail (printf "%s (%d) exceeds what the GPU workers can hold: gpuWorkers.maxReplicas (%d) x %d generator(s) per pod = %d; raise gpuWorkers.maxReplicas or gpusPerPod, or lower %s" $source $wanted (.Values.gpuWorkers.maxReplicas | int64) $perPod $capacity $source) -}}
{{- end -}}
{{- else -}}
{{- if gt (float64 .Values.generator.numGpus) 0.0 -}}
{{- fail "generator.numGpus > 0 needs GPU workers: set gpuWorkers.enabled: true" -}}
{{- end -}}
{{- if eq .Values.models.generator.device "cuda" -}}
{{- fail "models.generator.device: cuda needs GPU workers: set gpuWorkers.enabled: true" -}}
{{- end -}}
{{- if not .Values.cpuWorkers.enabled -}}
{{- fail "cpuWorkers.enabled: false leaves no worker for the replicas (the head runs none): enable cpuWorkers or gpuWorkers" -}}
{{- end -}}
{{- end -}}
{{- if (.Values.appAutoscaling | default dict).enabled -}}
{{- range $name := list "generator" "verifier" "planner" -}}
{{- if (index $.Values $name).autoscaling.enabled -}}
{{- fail (printf "%s.autoscaling.enabled: the app's effort-budget autoscaling (appAutoscaling.enabled) already scales %s; set its bounds in appAutoscaling.%s and turn this off" $name $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.external.url .Values.redis.external.existingSecret -}}
{{- fail "redis.external: set either url or existingSecret, not both" -}}
{{- end -}}
{{- end -}}
