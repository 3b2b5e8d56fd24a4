"""The verifier interface and the name -> class registry that configs build verifiers from.

Verifiers judge what the model proposed; they never search for a solution themselves (see
docs/architecture.md, "Verifiers judge; they do not solve").
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypeVar

from cluster.types import Candidate, GenerationRequest, GenerationResult, Problem, Verdict

# A program checks facts; a model gives an opinion (and costs engine tokens).
VerifierKind = Literal["program", "model"]

if TYPE_CHECKING:
    from cluster.prompts import PromptBuilder
    from cluster.sandbox import Sandbox

# Score reported with passed=None: it must not push a candidate up or down when blended.
NEUTRAL_SCORE = 0.5


class VerifierEngine(Protocol):
    """The engine a model verifier asks (the branch-generators, through their handle)."""

    async def generate(self, request: GenerationRequest) -> GenerationResult: ...


@dataclass(frozen=True, slots=True)
class VerifierDeps:
    """What a verifier may need to be built: model verifiers ask the engine, program verifiers
    that run model-written code run it in the sandbox."""

    engine: VerifierEngine | None = None
    prompts: PromptBuilder | None = None
    max_model_len: int = 0
    # One sandbox per process, shared, so its limit on programs running at once holds.
    sandbox: Sandbox | None = None


@dataclass(frozen=True, slots=True)
class VerifierSpec:
    """What a verifier says about itself: the planner and workers read this, never names."""

    name: str
    kind: VerifierKind
    judges_answer: bool
    # Engine tokens one verdict may generate (model verifiers); the search reserves them.
    tokens_per_call: int
    # A pass proves the answer right (the search may stop, `verified: true`); a failure proves
    # it (or the step) wrong (the branch is pruned). Evidence that is neither only scores.
    proves: bool
    refutes: bool


class Verifier(ABC):
    """Checks one candidate of one problem and says how good it is."""

    name: ClassVar[str]
    # A program checks; a model gives an opinion, costs engine tokens, and runs only where no
    # program judged the answer.
    kind: ClassVar[VerifierKind] = "program"
    # True when a verdict settles whether the final answer is right (not just its steps).
    judges_answer: ClassVar[bool] = True
    tokens_per_call: ClassVar[int] = 0
    # Whether a pass proves, and a failure refutes (see VerifierSpec); a model's opinion does neither.
    proves: ClassVar[bool] = True
    refutes: ClassVar[bool] = True
    # The task families it understands; None: every family.
    tasks: ClassVar[frozenset[str] | None] = None

    @classmethod
    def build(cls, deps: VerifierDeps) -> Verifier:
        """A verifier ready to judge; model verifiers take what they need from `deps`."""
        return cls()

    @classmethod
    def spec(cls) -> VerifierSpec:
        decisive = cls.kind == "program"
        return VerifierSpec(
            cls.name,
            cls.kind,
            cls.judges_answer,
            cls.tokens_per_call,
            proves=decisive and cls.proves,
            refutes=decisive and cls.refutes,
        )

    def applies_to(self, problem: Problem) -> bool:
        """Whether this verifier can judge candidates of `problem` at all."""
        return self.tasks is None or problem.task in self.tasks

    @abstractmethod
    async def verify(self, problem: Problem, candidate: Candidate) -> Verdict:
        """Judge `candidate`; passed=None when there is nothing this verifier can check."""

    def verdict(self, score: float, passed: bool | None, reason: str) -> Verdict:
        return Verdict(self.name, score, passed, reason, self.judges_answer)

    def abstain(self, reason: str) -> Verdict:
        return self.verdict(NEUTRAL_SCORE, None, reason)


class UnknownVerifierError(ValueError):
    """A config named a verifier that no module registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        listing = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown verifier {name!r}; known verifiers: {listing}")
        self.name = name
        self.known = known


VerifierT = TypeVar("VerifierT", bound=Verifier)

_REGISTRY: dict[str, type[Verifier]] = {}
# The modules that hold the built-in verifiers, imported when a name is first looked up (they
# depend on task rules and prompts, which must not be imported by this package's own import).
# A new verifier is one module with a `@register_verifier` class, listed here.
VERIFIER_MODULES = (
    "cluster.verifiers.arithmetic",
    "cluster.verifiers.numeric",
    "cluster.verifiers.game24",
    "cluster.verifiers.judge",
    "cluster.verifiers.python_program",
    "cluster.verifiers.code_tests",
)


def register_verifier(cls: type[VerifierT]) -> type[VerifierT]:
    """Class decorator: make `cls` buildable by its `name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a non-empty class attribute `name`")
    existing = _REGISTRY.get(name)
    if existing is not None and not _same_class(existing, cls):
        raise ValueError(f"verifier name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def build_verifier(name: str, deps: VerifierDeps | None = None) -> Verifier:
    """A new verifier of the registered class called `name`."""
    return _registered(name).build(deps or VerifierDeps())


def describe(name: str) -> VerifierSpec:
    """What the verifier called `name` is: its kind, what it judges, what it costs."""
    return _registered(name).spec()


def _registered(name: str) -> type[Verifier]:
    cls = _class_of(name)
    if cls is None:
        raise UnknownVerifierError(name, known_verifiers())
    return cls


def known_verifiers() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _class_of(name: str) -> type[Verifier] | None:
    if name not in _REGISTRY:
        _load_builtins()
    return _REGISTRY.get(name)


def _same_class(first: type[Verifier], second: type[Verifier]) -> bool:
    # A reloaded module re-creates its classes; that is a re-registration, not a clash.
    return (first.__module__, first.__qualname__) == (
        second.__module__,
        second.__qualname__,
    )


def _load_builtins() -> None:
    for module in VERIFIER_MODULES:
        importlib.import_module(module)
