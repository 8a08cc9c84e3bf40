"""Typed sites: named places inside a model, resolved through a per-architecture table.

A `Site` is (layer, point, position). Canonical points:

- ``resid_pre``   residual stream entering block `layer`                     [batch, seq, d_model]
- ``resid_post``  residual stream leaving block `layer`                      [batch, seq, d_model]
- ``attn_out``    what the attention sub-layer adds to the residual stream   [batch, seq, d_model]
- ``mlp_hidden``  MLP hidden activation, the input of the MLP output matrix  [batch, seq, d_mlp]
- ``mlp_out``     what the MLP sub-layer adds to the residual stream         [batch, seq, d_model]

`position` selects tokens: an int indexes real (non-padding) tokens of each row, so -1 is the
last real token whatever the padding side; ``None`` keeps every position.

Writable matrices are named by `Matrix` (layer, kind) and resolve to a parameter with a known
orientation, so edits never guess whether a weight is stored [out, in] or [in, out].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from repedit.errors import SiteNotFoundError, close_matches


class Point(str, Enum):
    RESID_PRE = "resid_pre"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    MLP_HIDDEN = "mlp_hidden"
    MLP_OUT = "mlp_out"


# Order of points inside one block (used for early stop and in-order nnsight access).
POINT_ORDER = {Point.RESID_PRE: 0, Point.ATTN_OUT: 1, Point.MLP_HIDDEN: 2, Point.MLP_OUT: 3, Point.RESID_POST: 4}


def _as_point(point: Point | str) -> Point:
    if isinstance(point, Point):
        return point
    try:
        return Point(str(point))
    except ValueError:
        valid = [p.value for p in Point]
        raise SiteNotFoundError(
            f"unknown point {point!r}; valid points: {valid}; did you mean {close_matches(str(point), valid)}?"
        ) from None


@dataclass(frozen=True, order=True)
class Site:
    """A place in the model: block `layer`, canonical `point`, token `position` (None = all)."""

    layer: int
    point: Point
    position: int | None = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", _as_point(self.point))
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise SiteNotFoundError(f"layer must be an int, got {self.layer!r}")
        if self.position is not None and not isinstance(self.position, int):
            raise SiteNotFoundError(f"position must be an int or None, got {self.position!r}")

    @property
    def name(self) -> str:
        return f"{self.point.value}.{self.layer}"

    def __str__(self) -> str:
        pos = "all" if self.position is None else self.position
        return f"{self.name}[{pos}]"

    @property
    def order_key(self) -> tuple[int, int]:
        """Execution order inside a forward pass."""
        return (self.layer, POINT_ORDER[self.point])

    @classmethod
    def parse(cls, text: str, position: int | None = -1) -> Site:
        """Parse ``"resid_post.12"``, ``"12.resid_post"`` or a TransformerLens name
        (``"blocks.12.hook_resid_post"``, ``"blocks.3.mlp.hook_post"``)."""
        text = text.strip()
        m = re.fullmatch(r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|mlp\.hook_post)",
                         text)
        if m:
            tl = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
                  "hook_mlp_out": "mlp_out", "mlp.hook_post": "mlp_hidden"}
            return cls(int(m.group(1)), _as_point(tl[m.group(2)]), position)
        m = re.fullmatch(r"([a-z_]+)\.(-?\d+)", text) or re.fullmatch(r"(-?\d+)\.([a-z_]+)", text)
        if not m:
            raise SiteNotFoundError(
                f"cannot parse site {text!r}; write 'resid_post.12' (point.layer), '12.resid_post' "
                "or a TransformerLens name such as 'blocks.12.hook_resid_post'"
            )
        a, b = m.groups()
        point, layer = (a, b) if not a.lstrip("-").isdigit() else (b, a)
        return cls(int(layer), _as_point(point), position)


class MatrixKind(str, Enum):
    MLP_OUT = "mlp_out"      # W_out / down_proj: d_mlp -> d_model
    MLP_IN = "mlp_in"        # up_proj / c_fc / W_in: d_model -> d_mlp
    ATTN_OUT = "attn_out"    # o_proj / c_proj / W_O: heads -> d_model
    EMBED = "embed"          # token embedding (no layer)
    UNEMBED = "unembed"      # lm_head (no layer)


@dataclass(frozen=True)
class Matrix:
    """A writable matrix. `layer` is None for embed/unembed."""

    kind: MatrixKind
    layer: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", MatrixKind(self.kind))
        except ValueError:
            valid = [k.value for k in MatrixKind]
            raise SiteNotFoundError(f"unknown matrix kind {self.kind!r}; valid kinds: {valid}") from None


@dataclass(frozen=True)
class ArchLayout:
    """How one architecture names its modules (paths relative to the root module).

    `attn_writer` / `mlp_writer` are the modules whose output is added to the residual stream
    (Gemma 3 normalises sub-layer outputs before the add, so its writers are the post-norms).
    Matrix entries are (path, orientation) with orientation "out_in" ([out, in], nn.Linear),
    "in_out" ([in, out], GPT-2 Conv1D and TransformerLens) or "heads_in_out" (TL W_O).
    """

    family: str
    layers: str
    attn_writer: str
    mlp_writer: str
    mlp_down: str
    embed: tuple[str, str]
    unembed: tuple[str, str]
    mlp_out: tuple[str, str]
    mlp_in: tuple[str, str]
    attn_out: tuple[str, str]
    final_norm: str | None
    resid_pre_hook: str | None = None  # TransformerLens toys name each point's hook module
    resid_post_hook: str | None = None
    mlp_hidden_hook: str | None = None


_LLAMA = ArchLayout(
    family="llama", layers="model.layers", attn_writer="self_attn", mlp_writer="mlp",
    mlp_down="mlp.down_proj", embed=("model.embed_tokens.weight", "vocab_d"), unembed=("lm_head.weight", "vocab_d"),
    mlp_out=("mlp.down_proj.weight", "out_in"), mlp_in=("mlp.up_proj.weight", "out_in"),
    attn_out=("self_attn.o_proj.weight", "out_in"), final_norm="model.norm",
)
_GEMMA3 = ArchLayout(
    family="gemma3", layers="model.layers", attn_writer="post_attention_layernorm",
    mlp_writer="post_feedforward_layernorm", mlp_down="mlp.down_proj",
    embed=("model.embed_tokens.weight", "vocab_d"), unembed=("lm_head.weight", "vocab_d"),
    mlp_out=("mlp.down_proj.weight", "out_in"), mlp_in=("mlp.up_proj.weight", "out_in"),
    attn_out=("self_attn.o_proj.weight", "out_in"), final_norm="model.norm",
)
_GPT2 = ArchLayout(
    family="gpt2", layers="transformer.h", attn_writer="attn", mlp_writer="mlp", mlp_down="mlp.c_proj",
    embed=("transformer.wte.weight", "vocab_d"), unembed=("lm_head.weight", "vocab_d"),
    mlp_out=("mlp.c_proj.weight", "in_out"), mlp_in=("mlp.c_fc.weight", "in_out"),
    attn_out=("attn.c_proj.weight", "in_out"), final_norm="transformer.ln_f",
)
_NEOX = ArchLayout(
    family="gpt_neox", layers="gpt_neox.layers", attn_writer="attention", mlp_writer="mlp",
    mlp_down="mlp.dense_4h_to_h", embed=("gpt_neox.embed_in.weight", "vocab_d"),
    unembed=("embed_out.weight", "vocab_d"), mlp_out=("mlp.dense_4h_to_h.weight", "out_in"),
    mlp_in=("mlp.dense_h_to_4h.weight", "out_in"), attn_out=("attention.dense.weight", "out_in"),
    final_norm="gpt_neox.final_layer_norm",
)
_TOY = ArchLayout(
    family="toy", layers="blocks", attn_writer="hook_attn_out", mlp_writer="hook_mlp_out",
    mlp_down="mlp.hook_post", embed=("embed.W_E", "vocab_d"), unembed=("unembed.W_U", "d_vocab"),
    mlp_out=("mlp.W_out", "in_out"), mlp_in=("mlp.W_in", "in_out"), attn_out=("attn.W_O", "heads_in_out"),
    final_norm="ln_final", resid_pre_hook="hook_resid_pre", resid_post_hook="hook_resid_post",
    mlp_hidden_hook="mlp.hook_post",
)

LAYOUTS: dict[str, ArchLayout] = {
    "llama": _LLAMA, "qwen2": _LLAMA, "mistral": _LLAMA, "gemma3_text": _GEMMA3, "gemma3": _GEMMA3,
    "gpt2": _GPT2, "gpt_neox": _NEOX, "toy": _TOY,
}


def layout_for(model_type: str) -> ArchLayout:
    """The module table of an architecture (HF `config.model_type`, or "toy")."""
    try:
        return LAYOUTS[model_type]
    except KeyError:
        raise SiteNotFoundError(
            f"no site table for architecture {model_type!r}; supported: {sorted(LAYOUTS)}. "
            "Add an ArchLayout to repedit.sites.LAYOUTS for it."
        ) from None
