"""ModelHandle: one loaded model, its tokenizer and its architecture layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from repedit.errors import InputError, SiteNotFoundError, close_matches
from repedit.sites import ArchLayout, Matrix, MatrixKind, Point, Site


@dataclass(frozen=True)
class MatrixRef:
    """A resolved writable matrix: the live parameter and how it is oriented.

    orientation: "out_in" ([out, in]), "in_out" ([in, out]), "heads_in_out" ([heads, d_head, out]),
    "vocab_d" ([vocab, d_model]) or "d_vocab" ([d_model, vocab]).
    """

    matrix: Matrix
    name: str            # parameter name in model.state_dict()
    param: nn.Parameter
    orientation: str


@dataclass
class ModelHandle:
    """A loaded model with what repedit needs to name places in it and to edit it.

    Attributes: `model` (the HF `PreTrainedModel`, or a TransformerLens `HookedTransformer` for
    toys), `tokenizer`, `layout` (module table), `n_layers`, `d_model`, `d_mlp`, `d_vocab`.
    """

    id: str
    model: nn.Module
    tokenizer: Any
    layout: ArchLayout
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    source: str
    is_toy: bool = False
    chat_template: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    # ----- structure -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        """Where token ids go: the embedding's device (the first device of a `device_map` split)."""
        if self.is_toy:
            return self.model.embed.W_E.device
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the weights (e.g. torch.bfloat16)."""
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    def layer_module(self, layer: int) -> nn.Module:
        self.check_layer(layer)
        return self.model.get_submodule(f"{self.layout.layers}.{layer}")

    def check_layer(self, layer: int) -> None:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise SiteNotFoundError(
                f"layer {layer!r} does not exist in {self.id}: valid layers are 0..{self.n_layers - 1}"
            )

    def check_site(self, site: Site) -> Site:
        self.check_layer(site.layer)
        return site

    def sites(self, points: list[Point | str] | None = None, position: int | None = -1) -> list[Site]:
        """Every site of the given points (default: all points) at every layer."""
        pts = [Point(p) for p in (points or list(Point))]
        return [Site(layer, p, position) for layer in range(self.n_layers) for p in pts]

    def matrix(self, matrix: Matrix | str, layer: int | None = None) -> MatrixRef:
        """Resolve a writable matrix (e.g. `handle.matrix("mlp_out", 8)`) to its live parameter."""
        if not isinstance(matrix, Matrix):
            matrix = Matrix(MatrixKind(matrix) if matrix in {k.value for k in MatrixKind} else matrix, layer)
        path, orient = getattr(self.layout, matrix.kind.value)
        if matrix.kind in (MatrixKind.EMBED, MatrixKind.UNEMBED):
            name = path
        else:
            if matrix.layer is None:
                raise SiteNotFoundError(f"matrix {matrix.kind.value!r} needs a layer (0..{self.n_layers - 1})")
            self.check_layer(matrix.layer)
            name = f"{self.layout.layers}.{matrix.layer}.{path}"
        params = dict(self.model.named_parameters(remove_duplicate=False))
        if name not in params:
            raise SiteNotFoundError(
                f"parameter {name!r} not found in {self.id}; close names: {close_matches(name, params)}"
            )
        return MatrixRef(matrix, name, params[name], orient)

    # ----- text ------------------------------------------------------------------------------
    def encode(self, texts: list[str], *, chat: bool = False, max_length: int | None = None,
               add_bos: bool | None = None) -> dict[str, torch.Tensor]:
        """Tokenise a batch with right padding: {"input_ids", "attention_mask"} [batch, seq].

        `chat=True` wraps each text as a user turn with the model's chat template (instruct
        models answer questions only when asked in their template).
        """
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("encode() takes a non-empty list of strings")
        tok = self.tokenizer
        if chat and self.chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in texts]
        rows = [tok.encode(t, add_special_tokens=(add_bos if add_bos is not None else not chat)) for t in texts]
        if max_length is not None:
            rows = [r[-max_length:] for r in rows]
        return pad_rows(rows, pad_id=self.pad_id, device=self.input_device)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pid = getattr(tok, "pad_token_id", None)
        if pid is None:
            pid = getattr(tok, "eos_token_id", None)
        return int(pid or 0)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, seq, vocab] of a plain forward pass (no gradients)."""
        return self.forward(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, seq, vocab]; gradients flow if enabled by the caller."""
        if self.is_toy:
            return self.model(input_ids, return_type="logits")
        dev = self.input_device                                     # first device of a device_map model
        if input_ids.device != dev:
            input_ids = input_ids.to(dev)
            attention_mask = attention_mask.to(dev) if attention_mask is not None else None
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def pad_rows(rows: list[list[int]], pad_id: int, side: str = "right",
             *, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Pad token rows on `side` ("right", or "left" for generation): input_ids and attention_mask
    [batch, seq] on `device` (pass `handle.input_device` for tokens that go into the model)."""
    if side not in ("right", "left"):
        raise InputError(f"side must be 'right' or 'left', got {side!r}")
    if any(len(r) == 0 for r in rows):
        raise InputError("a text encoded to zero tokens; pass non-empty text")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(rows), width), dtype=torch.long, device="cpu")
    for i, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
        ids[i, cols] = torch.tensor(r, dtype=torch.long, device="cpu")
        mask[i, cols] = 1
    ids, mask = ids.to(device), mask.to(device)          # one transfer per batch
    return {"input_ids": ids, "attention_mask": mask}
