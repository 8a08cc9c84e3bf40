"""Quantise a model the way deployments do, restore it exactly, and check analytically whether an
edit's deltas are large enough to survive the rounding.

Schemes (weight-only; every 2-D weight — linear layers and embeddings — is quantised, norms and
biases stay as they are; values are quantised and dequantised back into the parameter's dtype):
- ``int8``: symmetric round-to-nearest per output row, step = absmax / 127 (LLM.int8-style weights).
- ``int4-g<G>``: symmetric round-to-nearest in groups of G consecutive input weights, step =
  absmax / 7, levels −8..7 (the RTN baseline of GPTQ / AWQ at group size G).
- ``gguf-q8_0 | gguf-q4_0 | gguf-q4_1 | gguf-q5_0 | gguf-q5_1``: llama.cpp's formats, round trip
  through the ``gguf`` package's own quantiser (blocks of 32 along each row). Its numpy code has no
  K-quants (Q4_K raises), so Q4_0/Q4_1 stand in for them.

Why "recovered" is measured against the quantised *original* too: the shipped SmolLM2 weights are
dequantised GGUF Q4_1 values, so they already lie on the Q4_1 grid; a different 4-bit grid damages
the original model as well, and only the part of the erased probability that comes back relative to
what the quantised original still knows is the edit being undone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from repedit.errors import ConfigError
from repedit.forward.weights import holding

GGUF_SCHEMES = ("gguf-q8_0", "gguf-q4_0", "gguf-q4_1", "gguf-q5_0", "gguf-q5_1")
DEFAULT_SCHEMES = ("int8", "int4-g32", "int4-g128", "gguf-q8_0", "gguf-q4_0", "gguf-q4_1")
BLOCK = 32                                    #: GGUF block length (weights per scale)


@dataclass(frozen=True)
class Scheme:
    """One quantisation scheme: `kind` "int8" | "int4" | "gguf", `group` (int4, gguf), `gguf` type name."""

    name: str
    kind: str
    group: int | None = None
    gguf: str | None = None


def parse_scheme(name: str) -> Scheme:
    """`Scheme` from its name ("int8", "int4-g64", "gguf-q4_0", …); ConfigError lists the valid names."""
    if name == "int8":
        return Scheme(name, "int8")
    m = re.fullmatch(r"int4-g(\d+)", name)
    if m and int(m.group(1)) > 0:
        return Scheme(name, "int4", group=int(m.group(1)))
    if name in GGUF_SCHEMES:
        return Scheme(name, "gguf", group=BLOCK, gguf=name.split("-", 1)[1].upper())
    raise ConfigError(f"unknown quantisation scheme {name!r}; use int8, int4-g<group> (e.g. int4-g32, "
                      f"int4-g128) or one of {list(GGUF_SCHEMES)} (K-quants are not in the gguf package)")


def _groups(w: torch.Tensor, group: int) -> torch.Tensor:
    """w [rows, cols] as [rows, cols / group, group] (float32); cols must divide by group."""
    return w.float().reshape(w.shape[0], -1, group)


def applies(w: torch.Tensor, scheme: Scheme) -> bool:
    """Whether `scheme` quantises this parameter (2-D, and rows split into whole groups)."""
    return w.ndim == 2 and (scheme.group is None or w.shape[1] % scheme.group == 0)


def quantise_tensor(w: torch.Tensor, scheme: Scheme | str) -> torch.Tensor:
    """Quantised-and-dequantised copy of a 2-D weight, in w's dtype and on w's device."""
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    if not applies(w, scheme):
        raise ConfigError(f"{scheme.name} needs a 2-D weight whose rows split into groups of {scheme.group}; "
                          f"got {tuple(w.shape)}")
    if scheme.kind == "gguf":
        import gguf
        import numpy as np

        qtype = getattr(gguf.GGMLQuantizationType, scheme.gguf)
        x = w.detach().float().cpu().numpy()                              # the gguf quantiser is numpy
        back = gguf.quants.dequantize(gguf.quants.quantize(x, qtype), qtype).astype(np.float32)
        return torch.from_numpy(back).reshape(w.shape).to(w.device, w.dtype)
    levels = 127 if scheme.kind == "int8" else 7
    g = w.float()[:, None, :] if scheme.kind == "int8" else _groups(w, scheme.group)
    step = g.abs().amax(-1, keepdim=True).clamp_min(1e-12) / levels
    q = torch.clamp(torch.round(g / step), -levels - 1, levels) * step
    return q.reshape(w.shape).to(w.dtype)


def step_size(w: torch.Tensor, scheme: Scheme | str) -> torch.Tensor:
    """The quantisation step at every entry of w (float32, w's shape): the spacing of the grid it
    would be rounded to (GGUF: absmax/127 Q8_0, absmax/8 Q4_0, absmax/16 Q5_0, range/15 Q4_1, range/31 Q5_1)."""
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    g = w.float()[:, None, :] if scheme.kind == "int8" else _groups(w, scheme.group)
    absmax = g.abs().amax(-1, keepdim=True)
    span = g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)
    per = {"int8": absmax / 127, "int4": absmax / 7, "Q8_0": absmax / 127, "Q4_0": absmax / 8,
           "Q5_0": absmax / 16, "Q4_1": span / 15, "Q5_1": span / 31}[scheme.gguf or scheme.kind]
    return per.expand_as(g).reshape(w.shape)


@contextmanager
def quantised(handle, scheme: Scheme | str, names: Sequence[str] | None = None) -> Iterator[list[str]]:
    """Inside the block the model's 2-D weights (or `names`) hold their quantised values; on exit
    every one gets its exact previous bytes back. Yields the names of the quantised parameters."""
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    params = dict(handle.model.named_parameters())            # tied weights appear once
    chosen = [n for n in (names or params) if applies(params[n], scheme)]
    with holding(handle, ((n, quantise_tensor(params[n], scheme)) for n in chosen)) as held:  # one at a time
        yield held


@torch.no_grad()
def delta_survival(before: torch.Tensor, after: torch.Tensor, scheme: Scheme | str) -> dict:
    """Does the change `after − before` of one weight survive `scheme`?

    Analytic: |Δ| against the step of the grid `before` is rounded to (`step_ratio_median`, the share of
    the change's energy in entries moving more than half a step), and how much of `before` already lies
    on that grid (`on_grid`: there a change under half a step rounds away entirely; off the grid rounding
    dithers and small changes survive on average). Measured: `survival` = ⟨Q(after) − Q(before), Δ⟩ / ‖Δ‖²,
    the share of the change still present after quantising both (1 = intact, 0 = rounded away)."""
    scheme = parse_scheme(scheme) if isinstance(scheme, str) else scheme
    b, a = before.detach().float(), after.detach().float()
    delta = a - b
    energy = float((delta * delta).sum())
    if energy == 0.0:
        return {"scheme": scheme.name, "norm": 0.0, "survival": None, "step_ratio_median": 0.0,
                "share_over_half_step": 0.0, "on_grid": None, "rounds_away": None}
    step = step_size(before, scheme).to(b.device)
    qb = quantise_tensor(before, scheme).float()
    qa = quantise_tensor(after, scheme).float()
    moved = delta != 0
    ratio = (delta.abs()[moved] / step[moved].clamp_min(1e-12))
    over = (delta.abs() > step / 2) & moved
    survival = float(((qa - qb) * delta).sum()) / energy
    return {"scheme": scheme.name, "norm": math.sqrt(energy), "survival": survival,
            "step_ratio_median": float(ratio.median()),
            "share_over_half_step": float((delta[over] ** 2).sum()) / energy,
            "on_grid": float(((qb - b).abs() <= 1e-3 * step + 1e-12).float().mean()),
            "rounds_away": survival < 0.5}


def survival_table(originals: dict[str, torch.Tensor], handle, schemes: Sequence[str]) -> dict[str, dict]:
    """{scheme: {param: delta_survival(...)}} for every parameter in `originals` (its value before the
    edits) against its current value on `handle`; parameters a scheme does not quantise are left out."""
    params = dict(handle.model.named_parameters())
    out: dict[str, dict] = {}
    for name in schemes:
        scheme = parse_scheme(name)
        out[name] = {p: delta_survival(w0, params[p], scheme) for p, w0 in originals.items()
                     if applies(w0, scheme)}
    return out
