"""The verifier interface and the name -> class registry that configs build verifiers from.

Verifiers judge what the model proposed; they never search for a solution themselves (see
DESIGN.md, "Verifiers judge; they do not solve").
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

from cluster.types import Candidate, Problem, Verdict

# Score reported with passed=None: it must not push a candidate up or down when blended.
NEUTRAL_SCORE = 0.5


class Verifier(ABC):
    """Checks one candidate of one problem and says how good it is."""

    name: ClassVar[str]
    # True when a verdict settles whether the final answer is right (not just its steps).
    judges_answer: ClassVar[bool] = True
    # Model judges cost engine tokens; they run only where no program judged the answer.
    uses_model: ClassVar[bool] = False

    def applies_to(self, problem: Problem) -> bool:
        """Whether this verifier can judge candidates of `problem` at all."""
        return True

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
# Verifiers written in modules the package does not import (they may need a model client):
# they register themselves when build_verifier first asks for them by name.
_LAZY_MODULES: dict[str, str] = {"judge": "cluster.verifiers.judge"}


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


def build_verifier(name: str, **kwargs: Any) -> Verifier:
    """A new verifier of the registered class called `name`, constructed with `kwargs`."""
    cls = _class_of(name)
    if cls is None:
        raise UnknownVerifierError(name, known_verifiers())
    return cls(**kwargs)


def uses_model(name: str) -> bool:
    """Whether the verifier called `name` asks a model (and so costs engine tokens)."""
    cls = _class_of(name)
    return cls is not None and cls.uses_model


def checks_steps_only(name: str) -> bool:
    """Whether the verifier called `name` judges the steps of a chain, never its answer."""
    cls = _class_of(name)
    return cls is not None and not cls.judges_answer


def known_verifiers() -> list[str]:
    return sorted(_REGISTRY)


def _class_of(name: str) -> type[Verifier] | None:
    return _REGISTRY.get(name) or _load_lazy(name)


def _same_class(first: type[Verifier], second: type[Verifier]) -> bool:
    # A reloaded module re-creates its classes; that is a re-registration, not a clash.
    return (first.__module__, first.__qualname__) == (
        second.__module__,
        second.__qualname__,
    )


def _load_lazy(name: str) -> type[Verifier] | None:
    module = _LAZY_MODULES.get(name)
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        # Only the verifier's own module being absent means "unknown"; a dependency it
        # lacks is a real installation problem and must surface.
        if error.name != module:
            raise
        return None
    return _REGISTRY.get(name)
