"""Toy memorisation test bed: a small TransformerLens model trained to memorise injected sequences.

Training data per step: every memorised ("secret") sequence plus a fresh slice of once-seen
sequences, each of which appears in exactly one step. Held-out sequences are never seen.
A sequence is *recalled* when greedy decoding from its first `prefix_len` tokens reproduces the
rest exactly (equivalently: teacher-forced argmax is right at every later position).
Deterministic given the seed; trained once and cached (safetensors + JSON, no pickles).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from repedit.errors import ConfigError, InputError
from repedit.models.cache import cache_root, cached_dir
from repedit.models.handle import ModelHandle
from repedit.sites import layout_for


@dataclass(frozen=True)
class ToyConfig:
    """Architecture and memorisation schedule of a toy model."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 32
    d_vocab: int = 256
    n_memorised: int = 200     # sequences repeated every step
    n_once: int = 2000         # sequences each seen in exactly one step
    n_heldout: int = 500       # never seen
    steps: int = 200
    lr: float = 3e-3
    prefix_len: int = 8        # recall is judged on tokens after this prefix
    seed: int = 0
    reference: bool = False    # trained on the same schedule without the memorised sequences (MUSE's retrain reference)

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ToyConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.prefix_len < self.n_ctx:
            raise ConfigError(f"ToyConfig.prefix_len must be in 1..{self.n_ctx - 1}")

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.reference:
            fields.pop("reference")          # keeps the key (and the cached toy) of configs older than the field
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


TOYS = {"memorise": ToyConfig(), "memorise-reference": ToyConfig(reference=True)}


class ByteTokenizer:
    """Bytes as tokens (vocabulary 256), so text helpers also work on toys."""

    pad_token_id = 0
    eos_token_id = 0
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:  # noqa: ARG002
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _hooked(cfg: ToyConfig):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tl_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, d_mlp=cfg.d_mlp,
        n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, act_fn="gelu", normalization_type="LN", seed=cfg.seed,
        device="cpu",
    )
    return HookedTransformer(tl_cfg)


def _sequences(cfg: ToyConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)      # the toy is built and trained on the CPU
    total = cfg.n_memorised + cfg.n_once + cfg.n_heldout
    seqs = torch.randint(0, cfg.d_vocab, (total, cfg.n_ctx), generator=g, device="cpu")
    a, b = cfg.n_memorised, cfg.n_memorised + cfg.n_once
    return {"memorised": seqs[:a], "once": seqs[a:b], "heldout": seqs[b:]}


def train_toy(cfg: ToyConfig, progress: bool = True) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    """Train a toy from scratch; returns (model, sequence sets, training log)."""
    torch.manual_seed(cfg.seed)
    model = _hooked(cfg)
    data = _sequences(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    once_per_step = -(-cfg.n_once // cfg.steps)
    t0 = time.perf_counter()
    losses = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="train toy"):
        once = data["once"][step * once_per_step: (step + 1) * once_per_step]
        batch = once if cfg.reference else torch.cat([data["memorised"], once])
        loss = model(batch, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return model, data, {"seconds": time.perf_counter() - t0, "final_loss": losses[-1]}


@torch.no_grad()
def exact_recall(model, seqs: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """Per sequence: True if every token after `prefix_len` is the greedy prediction. [n] bool."""
    if seqs.ndim != 2 or seqs.shape[1] <= prefix_len:
        raise InputError(f"sequences must be [n, seq>{prefix_len}], got {tuple(seqs.shape)}")
    logits = model(seqs, return_type="logits")
    pred = logits[:, prefix_len - 1: -1].argmax(-1)
    return (pred == seqs[:, prefix_len:]).all(dim=1)


def load_toy(name: str = "memorise", config: ToyConfig | None = None) -> ModelHandle:
    """A trained toy model (cached); `name` picks a preset from TOYS unless `config` is given."""
    if config is None:
        if name not in TOYS:
            raise ConfigError(f"unknown toy {name!r}; presets: {sorted(TOYS)} (or pass a ToyConfig)")
        config = TOYS[name]
    root = cache_root() / "toys" / f"{name}-{config.key}"

    def build(tmp: Path) -> None:
        model, data, log = train_toy(config)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        save_file(data, str(tmp / "sequences.safetensors"))
        (tmp / "config.json").write_text(json.dumps({"config": asdict(config), "train": log}, indent=2))

    t0 = time.perf_counter()
    cached_dir(root, build)
    model = _hooked(config)
    model.load_state_dict(load_file(str(root / "model.safetensors")))
    model.eval()
    seqs = load_file(str(root / "sequences.safetensors"))
    meta = json.loads((root / "config.json").read_text())
    return ModelHandle(
        id=f"toy:{name}", model=model, tokenizer=ByteTokenizer(), layout=layout_for("toy"),
        n_layers=config.n_layers, d_model=config.d_model, d_mlp=config.d_mlp, d_vocab=config.d_vocab,
        source=str(root), is_toy=True,
        extras={"toy_config": config, "sequences": seqs, "train": meta["train"],
                "load_seconds": time.perf_counter() - t0},
    )
