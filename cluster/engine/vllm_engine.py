"""The vLLM engine adapter: one `AsyncLLM` per branch-generator replica.

CPU and GPU share this code path; only the engine arguments and environment differ.
Token counts returned here come from vLLM's own outputs, never from the text.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.config import ModelConfig
from cluster.engine.errors import EngineUnavailable
from cluster.models import named_model
from cluster.types import Completion, GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM


def use_cuda(config: ModelConfig) -> bool:
    if config.device != "auto":
        return config.device == "cuda"
    import torch

    return bool(torch.cuda.is_available())


def cpu_engine_env(config: ModelConfig) -> dict[str, str]:
    """Environment the CPU build reads at engine start (measured here: README, "The model").

    The engine's threads are bound to every core unless VLLM_CPU_OMP_THREADS_BIND says
    otherwise: one CPU replica per machine is the layout that measured fastest here.
    """
    cores = os.cpu_count() or 1
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(config.cpu_kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(cores)),
    }


def resolve_dtype(config: ModelConfig, cuda: bool) -> str:
    """auto: bfloat16 on GPUs; on CPUs, float32 unless the CPU has AVX512-BF16 and the named
    model measured faster in bfloat16 there (Qwen: 1.5-1.7x in batches; SmolLM2 slower;
    README, engine settings). Without AVX512-BF16, bf16 is emulated and float32 wins.
    """
    if config.dtype != "auto":
        return config.dtype
    if cuda:
        return "bfloat16"
    import torch

    # The same probe vLLM's CPU backend uses to pick its bf16 kernels.
    if config.path is None and torch.cpu._is_avx512_bf16_supported():
        return named_model(config.name).bf16_cpu_dtype
    return "float32"


# What the service asks of every engine unless model.engine_kwargs says otherwise: eager
# mode (on CPU, vLLM's torch.compile path costs start time; README, engine settings) and no
# periodic stats lines in the logs (the service exports its own metrics).
ENGINE_DEFAULTS: dict[str, Any] = {"enforce_eager": True, "disable_log_stats": True}


def engine_args(config: ModelConfig, model_dir: Path, cuda: bool) -> AsyncEngineArgs:
    """vLLM's engine arguments: the service's own settings, then model.engine_kwargs over the defaults."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(config.engine_kwargs) - known)
    if unknown:
        names = ", ".join(unknown)
        raise ValueError(f"model.engine_kwargs: {names} is not a vLLM engine setting (AsyncEngineArgs)")
    return AsyncEngineArgs(
        **{**ENGINE_DEFAULTS, **config.engine_kwargs},
        model=str(model_dir),
        served_model_name=config.name,
        max_model_len=config.max_model_len,
        dtype=resolve_dtype(config, cuda),  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str
    max_model_len: int
    device: str


class VLLMEngine:
    """Turns typed generation requests into one batched `AsyncLLM.generate` call each."""

    def __init__(self, engine: AsyncLLM, info: EngineInfo, replica: str) -> None:
        self._engine = engine
        self.info = info
        self.replica = replica

    @classmethod
    def start(cls, config: ModelConfig, model_dir: Path, replica: str = "local") -> VLLMEngine:
        from vllm.v1.engine.async_llm import AsyncLLM

        cuda = use_cuda(config)
        if not cuda:
            for key, value in cpu_engine_env(config).items():
                os.environ.setdefault(key, value)
        engine = AsyncLLM.from_engine_args(engine_args(config, model_dir, cuda))
        info = EngineInfo(config.name, config.max_model_len, "cuda" if cuda else "cpu")
        return cls(engine, info, replica)

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self._engine.get_tokenizer()

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        from vllm import SamplingParams
        from vllm.inputs import TextPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        params = SamplingParams(
            n=request.n,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            seed=request.seed,
            stop=list(request.stop) or None,
            logprobs=request.logprobs,
            structured_outputs=StructuredOutputsParams(regex=request.regex) if request.regex else None,
            # Streaming with n>1 can return fewer than n sequences on the async engine.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        prompt: TextPrompt = {"prompt": request.prompt}
        if request.cache_salt is not None:
            prompt["cache_salt"] = request.cache_salt
        final = None
        with _engine_alive():
            async for output in self._engine.generate(prompt, params, request_id=uuid.uuid4().hex):
                final = output
        if final is None:
            raise RuntimeError("the engine finished the request without any output")
        completions = tuple(
            Completion(
                text=seq.text,
                token_count=len(seq.token_ids),
                finish_reason=seq.finish_reason,
                cumulative_logprob=seq.cumulative_logprob,
                stop_reason=seq.stop_reason if isinstance(seq.stop_reason, str) else None,
            )
            for seq in final.outputs
        )
        return GenerationResult(
            completions=completions,
            prompt_tokens=len(final.prompt_token_ids or ()),
            cached_tokens=final.num_cached_tokens or 0,
            replica=self.replica,
            first_token_logprobs=_first_position_logprobs(final.outputs[0].logprobs)
            if request.logprobs
            else (),
        )

    async def check_health(self) -> None:
        with _engine_alive():
            await self._engine.check_health()

    def shutdown(self) -> None:
        self._engine.shutdown()


@contextmanager
def _engine_alive() -> Iterator[None]:
    """vLLM's EngineDeadError as the service's own EngineUnavailable: callers in other
    processes, which do not import vLLM, must recognise it to retry elsewhere."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError as error:
        raise EngineUnavailable("the engine of this replica died; the call can go to another") from error


def _first_position_logprobs(logprobs: object) -> tuple[tuple[str, float], ...]:
    if not logprobs:
        return ()
    first = logprobs[0]  # type: ignore[index]
    return tuple((entry.decoded_token or "", float(entry.logprob)) for entry in first.values())
