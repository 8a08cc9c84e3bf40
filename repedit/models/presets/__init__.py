"""Per-model presets: the model-specific defaults of every method, one JSON file per model id.

Edit layers, the memorisation signature's peak depth and the SAE a method uses depend on the model
(SmolLM2-135M's ROCR layers 4–6 are not Gemma 3's). They are data, not code: each model id has a
`<id>.json` in this folder (shipped in the wheel), written by `build_preset`
(`repedit presets build <model>`, `repedit.recipes.presets`) from sweeps run on that model,
with the sweep numbers and the rule that chose each value in its provenance.

A config field whose default is `None` means "from the model's preset": `resolve_config(cfg, handle)`
fills those fields when a method starts building (`dataclasses.replace`, so `__post_init__` checks
the filled values); a value set explicitly always wins, and a config with every preset field set
never looks a preset up (so it runs on any model). A model without a preset raises
`PresetNotFoundError` naming the command that builds one.

Layout of a preset file (`FORMAT` 1; files written before `repedit.formats` carry `"format": 1` instead
of the two version fields, and still read):

    {"format_version": 1, "repedit_version": "<the repedit that wrote it>", "model": "<id>",
     "architecture": {"n_layers": .., "d_model": .., "d_mlp": ..},
     "defaults": {"<section>": {"<field>": value, ...}, ...},   # section = a config's PRESET_SECTION
     "sae": "saes/<dir>" | null,                   # found by repedit.data.resolve_sae (checkout or wheel)
     "provenance": {"command": .., "date": .., "rules": {"<section>.<field>": "why"}, "sweeps": {..}}}

`$REPEDIT_PRESETS` (a folder) is searched before the shipped presets, for presets built elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from repedit.data import data_dirs, find_sae
from repedit.errors import ConfigError, ModelNotFoundError, PresetNotFoundError
from repedit.formats import WRITES, check_format, stamped

FORMAT = WRITES["preset"]
COMMAND = "repedit presets build {model}"
#: sections a preset holds and the fields of each (documentation and validation of the JSON)
SECTIONS: dict[str, tuple[str, ...]] = {
    "rocr": ("layers",), "sae-align": ("layers",), "mrp": ("layer",), "pga": ("depth",),
    "pga-trained": ("depth",), "rmu": ("layer",), "leace": ("depth",), "knownness": ("layer",),
    "train-sae": ("layer",),
}


def presets_dir() -> Path:
    """The shipped presets (this package's folder)."""
    return Path(__file__).resolve().parent


def source_root() -> Path:
    """The folder holding repedit/ (the checkout, or site-packages when installed). Preset SAE paths
    (`saes/<dir>`) do not depend on it: they resolve through `repedit.data.resolve_sae` ($REPEDIT_DATA,
    the checkout's saes/, then the SAEs shipped in the wheel)."""
    return Path(__file__).resolve().parents[3]


def file_name(model_id: str) -> str:
    """`<id>.json`, with characters other than letters, digits, '.', '_' and '-' replaced by '--'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", str(model_id)).strip("-") + ".json"


def _search_dirs() -> list[Path]:
    env = os.environ.get("REPEDIT_PRESETS")
    return ([Path(env)] if env else []) + [presets_dir()]


def available() -> list[str]:
    """Model ids that have a preset."""
    ids = set()
    for d in _search_dirs():
        for p in d.glob("*.json"):
            try:
                ids.add(json.loads(p.read_text())["model"])
            except (ValueError, KeyError, OSError):
                continue
    return sorted(ids)


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Preset:
    """One model's defaults: `defaults[section][field]` (lists as tuples; None = no value for this
    model, e.g. sae-align layers without an SAE), the SAE path, and how each value was chosen."""

    model: str
    n_layers: int
    d_model: int
    defaults: Mapping[str, Mapping[str, Any]]
    sae: str | None = None                    #: SAE directory, `saes/<dir>` (repedit.data; None: no SAE)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None                  #: the file it was read from

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> Preset:
        where = f" ({path})" if path else ""
        check_format("preset", d, path or "the preset", legacy="format",
                     redo=f"`{COMMAND.format(model=d.get('model', '<model>'))}`")
        try:
            arch, defaults = d["architecture"], d["defaults"]
            model, n_layers, d_model = str(d["model"]), int(arch["n_layers"]), int(arch["d_model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"preset{where} lacks {exc}; rebuild it with `{COMMAND.format(model=d.get('model'))}`") \
                from exc
        unknown = [f"{s}.{k}" for s, vals in defaults.items() for k in vals if k not in SECTIONS.get(s, ())]
        if unknown:
            raise ConfigError(f"preset{where} has unknown fields {unknown}; valid: "
                              f"{[f'{s}.{k}' for s, ks in SECTIONS.items() for k in ks]}")
        frozen = {s: MappingProxyType({k: _tuples(v) for k, v in vals.items()}) for s, vals in defaults.items()}
        return cls(model=model, n_layers=n_layers, d_model=d_model, defaults=MappingProxyType(frozen),
                   sae=d.get("sae"), provenance=MappingProxyType(dict(d.get("provenance", {}))), path=path)

    def to_dict(self) -> dict:
        return stamped("preset", {"model": self.model,
                "architecture": {"n_layers": self.n_layers, "d_model": self.d_model},
                "defaults": {s: {k: list(v) if isinstance(v, tuple) else v for k, v in vals.items()}
                             for s, vals in self.defaults.items()},
                "sae": self.sae, "provenance": dict(self.provenance)})

    def value(self, section: str, name: str):
        """The preset's value of `section.name` (None when this model has none)."""
        return self.defaults.get(section, {}).get(name)

    def rule(self, section: str, name: str) -> str | None:
        """How `section.name` was chosen (from the provenance)."""
        return dict(self.provenance.get("rules", {})).get(f"{section}.{name}")

    # the values most callers want, by name
    @property
    def rocr_layers(self) -> tuple[int, ...]:
        return self.value("rocr", "layers")

    @property
    def sae_align_layers(self) -> tuple[int, ...] | None:
        return self.value("sae-align", "layers")

    @property
    def mrp_layer(self) -> int:
        return self.value("mrp", "layer")

    @property
    def pga_depth(self) -> int:
        return self.value("pga", "depth")

    @property
    def rmu_layer(self) -> int:
        return self.value("rmu", "layer")

    @property
    def leace_depth(self) -> int:
        return self.value("leace", "depth")

    @property
    def knownness_layer(self) -> int:
        return self.value("knownness", "layer")

    def sae_path(self) -> Path:
        """The preset's SAE directory; raises `ConfigError` (how to train one) when the model has none."""
        if not self.sae:
            raise ConfigError(
                f"no SAE is shipped for {self.model} (its preset has no sae): train one with "
                f"`repedit train-sae --model {self.model} --layer {self.value('train-sae', 'layer') or '<layer>'} "
                f"--out saes/{self.model}-L<layer>-topk` and pass it (sae=..., recipe [attacks] sae = ...), "
                f"then rebuild the preset (`{COMMAND.format(model=self.model)}`) to make it the default")
        path = find_sae(self.sae)
        if path is None:
            raise ModelNotFoundError(
                f"the {self.model} preset names the SAE {self.sae!r}, but no saes/ folder holds it with a "
                f"cfg.json (looked in {[str(p) for _, p in data_dirs('saes')]}): set REPEDIT_DATA to a folder "
                f"holding {self.sae}, or reinstall repedit from a wheel built with its data")
        return path


def _find(model_id: str) -> Path | None:
    name = file_name(model_id)
    for d in _search_dirs():
        if (d / name).exists():
            return d / name
    return None


def preset_for(handle_or_id) -> Preset:
    """The preset of a model (a `ModelHandle` or a model id). A handle is also checked against the
    preset's architecture (layers, width). Raises `PresetNotFoundError` naming the build command."""
    handle = None if isinstance(handle_or_id, str) else handle_or_id
    model_id = handle_or_id if handle is None else getattr(handle, "id", None)
    if not isinstance(model_id, str) or not model_id:
        raise PresetNotFoundError(f"preset_for() takes a ModelHandle or a model id, got {handle_or_id!r}")
    path = _find(model_id)
    if path is None:
        raise PresetNotFoundError(
            f"no preset for model {model_id!r}: its edit layers, signature depth and SAE are chosen per model. "
            f"Build one with `{COMMAND.format(model=model_id)}` (repedit.recipes.presets.build_preset), or "
            f"set every model-specific field of the method's config explicitly. Presets exist for: {available()}")
    preset = Preset.from_dict(json.loads(path.read_text()), path)
    if handle is not None and (handle.n_layers, handle.d_model) != (preset.n_layers, preset.d_model):
        raise ConfigError(
            f"the preset for {model_id!r} ({path}) is for {preset.n_layers} layers of width {preset.d_model}, but "
            f"this model has {handle.n_layers} layers of width {handle.d_model}; rebuild it with "
            f"`{COMMAND.format(model=model_id)}`")
    return preset


def preset_fields(config) -> tuple[str, tuple[str, ...]] | None:
    """(section, fields) a config class takes from the preset (its PRESET_SECTION / PRESET_FIELDS)."""
    section = getattr(config, "PRESET_SECTION", None)
    return (section, tuple(getattr(config, "PRESET_FIELDS", ()))) if section else None


def resolve_config(config, handle_or_id):
    """A copy of `config` with its None preset fields filled from the model's preset (explicit values
    win; nothing is looked up when no preset field is None). Raises `PresetNotFoundError` when the
    model has no preset, `ConfigError` when its preset has no value for a needed field."""
    spec = preset_fields(config)
    if spec is None:
        return config
    section, names = spec
    missing = [n for n in names if getattr(config, n) is None]
    if not missing:
        return config
    preset = preset_for(handle_or_id)
    values = {}
    for n in missing:
        v = preset.value(section, n)
        if v is None:
            why = preset.rule(section, n)
            raise ConfigError(f"the {preset.model} preset has no {section}.{n}"
                              + (f" ({why})" if why else "")
                              + f"; set {type(config).__name__}.{n} explicitly")
        values[n] = v
    return dataclasses.replace(config, **values)


__all__ = ["COMMAND", "FORMAT", "SECTIONS", "Preset", "available", "file_name", "preset_fields", "preset_for",
           "presets_dir", "resolve_config", "source_root"]
