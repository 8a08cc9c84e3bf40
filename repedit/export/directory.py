"""Export an edited model as a plain Hugging Face directory, with a manifest and the edits.

Layout of the output directory:
- model.safetensors, config.json, generation_config.json, tokenizer files: `AutoModelForCausalLM.
  from_pretrained(dir)` loads it with no repedit installed;
- manifest.json: format version (repedit.formats, kind "export-manifest"), repedit version, base model,
  every edit (method, config, target, deltas and their ranks), per-tensor sha256 before and after, and the
  logit check made after writing;
- the base model is named by its hub id, never by a local path (`base_model`): a packaged model by the
  hub id it was made from plus the package and version its weights came from; a hub name as given
  (with the commit it resolved to, when known); a local directory by its config's own `_name_or_path`
  when that is a hub id (`org/name`), else by the directory's name alone. config.json's
  `_name_or_path` is that id too;
- edits.safetensors: every delta's factors (`<edit>.<delta>.u|v|q`) — re-applying them to the
  original weights reproduces the export bit-exactly (`reapply`);
- originals.safetensors: the original values of the touched tensors, so `revert` is exact even for
  projections (which lose information).
Writes go to a temporary sibling directory that is renamed into place only after the check passed.
Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from repedit.edits.base import DenseDelta, Edit, EditError, LowRankDelta, ProjectorDelta
from repedit.edits.stack import EditStack
from repedit.errors import InputError, ReprEditError
from repedit.formats import check_format, stamped
from repedit.forward.weights import tensor_sha256
from repedit.version import __version__

CHECK_TEXTS = ("The capital of France is", "Licensed under the Apache License, Version 2.0",
               "def main():\n    print(")


class ExportError(ReprEditError, OSError):
    """The export could not be written or did not reproduce the in-memory model."""


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")   #: org/name


def base_model(handle) -> dict:
    """The manifest's `base_model`: {"id": hub id or directory name, "repedit_name", "source_package",
    "revision", "weights"} — no local path (see the module doc)."""
    from repedit.models.registry import PACKAGED, package_version

    entry = PACKAGED.get(handle.id)
    if entry is not None:
        version = package_version(handle.id)
        return {"id": entry.hub_id, "repedit_name": handle.id,
                "source_package": f"{entry.dist}=={version}" if version else entry.dist,
                "revision": None, "weights": entry.weights}
    local = Path(str(handle.source)).expanduser()
    cfg = getattr(handle.model, "config", None)
    if local.is_dir():
        try:
            own = json.loads((local / "config.json").read_text()).get("_name_or_path")
        except (OSError, ValueError):
            own = None
        hub = own if isinstance(own, str) and HUB_ID.fullmatch(own) else None
        weights = "a local directory" + ("" if hub else " (no hub id in its config.json)")
        return {"id": hub or local.resolve().name, "repedit_name": None, "source_package": None,
                "revision": None, "weights": weights}
    return {"id": str(handle.source), "repedit_name": None, "source_package": None,
            "revision": getattr(cfg, "_commit_hash", None), "weights": "the hub model"}


def _name_config(directory: Path, hub_id: str) -> None:
    """config.json's `_name_or_path` = the base model's id (transformers leaves it out or writes the
    local path it loaded from)."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    cfg["_name_or_path"] = hub_id
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_edits: int
    max_logit_diff: float
    seconds: float


def _delta_record(prefix: str, d) -> tuple[dict, dict[str, torch.Tensor]]:
    kind = {LowRankDelta: "low_rank", DenseDelta: "dense", ProjectorDelta: "projector"}[type(d)]
    rec = {"param": d.param, "kind": kind, "rank": d.rank, "tensors": {}}
    if isinstance(d, ProjectorDelta):
        rec["side"] = d.side
    tensors = {}
    for name, t in d.tensors().items():
        key = f"{prefix}.{name}"
        tensors[key] = t.detach().contiguous().cpu()
        rec["tensors"][name] = key
    return rec, tensors


def _edit_record(i: int, e: Edit) -> tuple[dict, dict[str, torch.Tensor]]:
    deltas, tensors = [], {}
    for j, d in enumerate(e.deltas):
        rec, ts = _delta_record(f"{i}.{j}", d)
        deltas.append(rec)
        tensors.update(ts)
    return {"method": e.method, "model_id": e.model_id, "config": e.config, "target": e.target,
            "stats": e.stats, "deltas": deltas}, tensors


@torch.no_grad()
def _logits(model, tokenizer, texts) -> list[torch.Tensor]:
    """Logits of each text on its own (no padding, so the tokenizer needs no pad token), as float32
    on the CPU; the token ids go to the device of the model's embedding."""
    dev = model.get_input_embeddings().weight.device
    out = []
    for t in texts:
        ids = torch.tensor([tokenizer.encode(t)], dtype=torch.long, device=dev)
        out.append(model(input_ids=ids).logits.float().cpu())
    return out


def _placement(model) -> dict:
    """from_pretrained arguments that put a reloaded copy where `model` lives (same device_map)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        return {"device_map": dict(device_map)}
    device = next(model.parameters()).device
    return {} if device.type == "cpu" else {"device_map": {"": str(device)}}


def export(handle, out: str | Path, stack: EditStack | None = None, *, force: bool = False,
           check_texts=CHECK_TEXTS, atol: float = 1e-5) -> ExportResult:
    """Write `handle`'s current weights as a plain HF model plus manifest and edits (see module doc)."""
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    if handle.is_toy:
        raise ExportError("toy models are TransformerLens models and cannot be exported as Hugging Face "
                          "directories; export a Hugging Face model (e.g. smollm2-135m)")
    if stack is not None and stack.handle is not handle:
        raise InputError("the EditStack belongs to a different handle")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass force=True (CLI: --force) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        handle.model.save_pretrained(tmp, safe_serialization=True)
        handle.tokenizer.save_pretrained(tmp)
        base = base_model(handle)
        _name_config(tmp, base["id"])
        edits = list(stack.edits) if stack else []
        records, tensors, originals, before = [], {}, {}, {}
        for i, e in enumerate(edits):
            rec, ts = _edit_record(i, e)
            records.append(rec)
            tensors.update(ts)
        for snap in (stack._snapshots if stack else []):       # earliest snapshot = original value
            for name, t in snap.items():
                originals.setdefault(name, t.contiguous().cpu())
        params = dict(handle.model.named_parameters())
        for name, t in originals.items():
            before[name] = {"sha256_before": tensor_sha256(t), "sha256_after": tensor_sha256(params[name]),
                            "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
        if tensors:
            save_file(tensors, str(tmp / "edits.safetensors"))
            save_file(originals, str(tmp / "originals.safetensors"))
        attn = getattr(handle.model.config, "_attn_implementation", None) or "eager"
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=handle.dtype, attn_implementation=attn,
                                                        **_placement(handle.model))   # like with like
        reloaded.eval()
        tok = handle.tokenizer
        diff = max(float((a - b).abs().max()) for a, b in
                   zip(_logits(reloaded, tok, check_texts), _logits(handle.model, tok, check_texts)))
        if not diff <= atol:
            raise ExportError(f"reloaded logits differ from the in-memory model by {diff:.3g} (> {atol}); "
                              "nothing was written")
        manifest = stamped("export-manifest", {
            "format": "repedit-export/1", "repedit_version": __version__, "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "base_model": base,
            "edits": records, "tensors": before,
            "journal": stack.to_dict() if stack else [],
            "check": {"texts": list(check_texts), "max_abs_logit_diff": diff, "atol": atol},
            "load": "transformers.AutoModelForCausalLM.from_pretrained(<this directory>)",
            "revert": "repedit.export.directory.revert(<this directory>) restores the original tensors exactly",
        })
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, len(records), diff, round(time.perf_counter() - t0, 2))


def read_manifest(path: str | Path) -> dict:
    """An export's manifest.json, its format version checked (repedit.formats)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise ExportError(f"{path} is not a repedit export (no manifest.json)")
    manifest = json.loads((path / "manifest.json").read_text())
    check_format("export-manifest", manifest, path / "manifest.json",
                 redo="export the model again: repedit.export.export, or `repedit edit ... --out DIR`")
    return manifest


def load_edits(path: str | Path) -> list[Edit]:
    """The edits stored in an export, as Edit values (apply them to the original model with an EditStack)."""
    path = Path(path)
    man = read_manifest(path)
    if not man["edits"]:
        return []
    tensors = load_file(str(path / "edits.safetensors"))
    edits = []
    for rec in man["edits"]:
        deltas = []
        for d in rec["deltas"]:
            t = {k: tensors[v] for k, v in d["tensors"].items()}
            make = {"low_rank": lambda: LowRankDelta(d["param"], t["u"], t["v"]),
                    "dense": lambda: DenseDelta(d["param"], t["d"]),
                    "projector": lambda: ProjectorDelta(d["param"], t["q"], d["side"])}
            deltas.append(make[d["kind"]]())
        edits.append(Edit(rec["method"], tuple(deltas), rec["model_id"], rec["config"], rec["target"], rec["stats"]))
    return edits


def revert(path: str | Path, model) -> None:
    """Put the original tensors of an export back into `model` (a model loaded from that export)."""
    path = Path(path)
    man = read_manifest(path)
    if not man["tensors"]:
        return
    originals = load_file(str(path / "originals.safetensors"))
    params = dict(model.named_parameters())
    for name, info in man["tensors"].items():
        if name not in params:
            raise EditError(f"parameter {name} of the manifest is not in this model")
        if tensor_sha256(params[name]) != info["sha256_after"]:
            raise EditError(f"{name} is not the exported value (sha256 differs); revert only an unmodified export")
    with torch.no_grad():
        for name in man["tensors"]:
            params[name].copy_(originals[name])
