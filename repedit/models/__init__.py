"""Model loading: packaged real models, HF models, toy memorisation models."""

from repedit.models.handle import MatrixRef, ModelHandle
from repedit.models.loader import load, load_hf, wrap_hf
from repedit.models.presets import Preset, preset_for, resolve_config
from repedit.models.registry import DEFAULT_MODEL, PACKAGED, converted_dir, is_cached, is_installed

__all__ = ["DEFAULT_MODEL", "PACKAGED", "MatrixRef", "ModelHandle", "Preset", "converted_dir", "is_cached",
           "is_installed", "load", "load_hf", "preset_for", "resolve_config", "wrap_hf"]
