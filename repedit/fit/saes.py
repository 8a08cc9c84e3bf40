"""Sparse autoencoders: train with sae-lens on real activations, evaluate, save in sae-lens format, load.

Recipe (`repedit train-sae`, config `SAETrainConfig`): capture the residual stream of the default
model on real English text (probes/text wiki.train + news.train), drop position 0 and tokens whose
norm exceeds `outlier_factor` × the median (the model's massive activations), train a sae-lens
TopK SAE, and evaluate on held-out text (wiki.heldout): explained variance, L0, dead latents and
CE-loss recovered (splicing the reconstruction into the forward at every position but 0;
recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean), zero = the site's activation zeroed).
Weights are saved in float16 to keep the shipped file small.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from repedit.backends.base import get_backend
from repedit.data import resolve_sae
from repedit.errors import ConfigError, InputError, ModelNotFoundError, SAEMismatchError
from repedit.forward.capture import capture
from repedit.models.cache import atomic_dir, cache_root
from repedit.models.presets import resolve_config
from repedit.models.registry import DEFAULT_MODEL
from repedit.sites import Point, Site
from repedit.suites import load_text


@dataclass(frozen=True)
class SAETrainConfig:
    """What `repedit train-sae` trains (the shipped SAE's exact recipe is saved beside it).
    `layer` None = the model's preset (`train-sae.layer`: the middle layer; SmolLM2-135M 15)."""

    PRESET_SECTION: ClassVar[str] = "train-sae"
    PRESET_FIELDS: ClassVar[tuple[str, ...]] = ("layer",)

    model: str = DEFAULT_MODEL
    layer: int | None = None
    point: str = "resid_post"
    d_sae: int = 2048
    k: int = 32
    n_tokens: int = 400_000          # training activations collected
    context: int = 128               # tokens per text chunk
    batch_size: int = 1024           # training batch (activations)
    epochs: int = 2
    lr: float = 5e-3                 # high: TopK on scaled activations learns slowly at 4e-4 (measured)
    outlier_factor: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k <= 0 or self.d_sae <= self.k:
            raise ConfigError("need 0 < k < d_sae")
        if self.n_tokens < self.batch_size:
            raise ConfigError("n_tokens must be at least one batch")
        Site(self.layer if self.layer is not None else 0, self.point)  # an unknown point raises, listing valid ones

    @property
    def hook_name(self) -> str:
        from repedit.backends.lens import hook_name

        if self.layer is None:
            raise ConfigError("SAETrainConfig.layer is None: resolve it first (repedit.models.presets.resolve_config)")
        return hook_name((self.layer, Point(self.point)))


def text_chunks(handle, texts: list[str], context: int) -> list[str]:
    """Split documents into pieces of about `context` tokens (pieces under 16 tokens are dropped)."""
    chunks = []
    for t in texts:
        ids = handle.tokenizer.encode(t, add_special_tokens=False)
        chunks.extend(handle.tokenizer.decode(ids[i: i + context]) for i in range(0, len(ids) - 16, context))
    return chunks


def drop_outliers(rows: torch.Tensor, outlier_factor: float) -> torch.Tensor:
    """Rows whose norm is at most `outlier_factor` × the median norm (massive activations out)."""
    norms = rows.norm(dim=-1)
    return rows[norms <= outlier_factor * norms.median()]


GROUP = 64   # chunks per capture call in `collect` (outliers are judged per group; sharded runs split here)


def group_rows(handle, site: Site, chunks: list[str], context: int, outlier_factor: float) -> torch.Tensor:
    """Activations [n, d] of one group of chunks at `site` (position None), position 0 and outliers dropped."""
    got = capture(handle, chunks, [site], batch_size=16, max_length=context + 1, progress=False)[site]
    return drop_outliers(torch.cat([g[1:] for g in got]), outlier_factor)


def collect(handle, site_layer: int, point: str, texts: list[str], n_tokens: int, context: int,
            outlier_factor: float, progress: bool = True) -> torch.Tensor:
    """Activations [n, d] of real text at (layer, point), without position 0 and norm outliers."""
    site = Site(site_layer, point, position=None)
    chunks, out, total = text_chunks(handle, texts, context), [], 0
    bar = tqdm(total=n_tokens, disable=not progress, desc=f"collect {site}")
    for i in range(0, len(chunks), GROUP):
        rows = group_rows(handle, site, chunks[i: i + GROUP], context, outlier_factor)
        out.append(rows)
        total += len(rows)
        bar.update(len(rows))
        if total >= n_tokens:
            break
    bar.close()
    if total < n_tokens:
        raise InputError(f"the corpus gave only {total} activations; lower n_tokens or add text")
    return torch.cat(out)[:n_tokens]


def cached_activations(handle, cfg: SAETrainConfig, progress: bool = True) -> torch.Tensor:
    """Training activations, collected once per (model, site, corpus settings) and cached (fp16)."""
    from safetensors.torch import load_file, save_file

    key = f"{cfg.model}-{cfg.point}.{cfg.layer}-n{cfg.n_tokens}-c{cfg.context}-o{cfg.outlier_factor}"
    path = cache_root() / "activations" / f"{key}.safetensors"
    if path.exists():
        return load_file(str(path))["acts"].float()
    texts = load_text("wiki", "train") + load_text("news", "train")
    acts = collect(handle, cfg.layer, cfg.point, texts, cfg.n_tokens, cfg.context, cfg.outlier_factor, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"acts": acts.half().contiguous()}, str(tmp))
    tmp.replace(path)
    return acts


def train(handle, cfg: SAETrainConfig, progress: bool = True):
    """Collect activations and train a sae-lens TopK SAE; returns (sae, activations, seconds dict)."""
    from sae_lens import LoggingConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if cfg.model != handle.id:
        raise ConfigError(f"SAETrainConfig.model is {cfg.model!r} but the handle is {handle.id!r}; the SAE records "
                          "the model it was trained on, so they must agree")
    cfg = resolve_config(cfg, handle)                       # layer None: the model's preset
    t0 = time.perf_counter()
    acts = cached_activations(handle, cfg, progress)
    t_collect = time.perf_counter() - t0
    # Train on activations scaled to mean norm sqrt(d) (the raw stream has norm ~170 and a large
    # mean), then fold the scale back into the weights so the saved SAE reads raw activations.
    scale = float(acts.norm(dim=-1).mean() / acts.shape[1] ** 0.5)
    data = acts / scale
    torch.manual_seed(cfg.seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=cfg.d_sae, k=cfg.k, dtype="float32",
                                                device="cpu", rescale_acts_by_decoder_norm=False))
    with torch.no_grad():  # start the decoder bias at the data mean (the residual stream is far from 0)
        sae.b_dec.copy_(data.mean(0))
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)

    def batches():
        while True:
            perm = torch.randperm(len(data), generator=g, device="cpu").to(data.device)
            for i in range(0, len(perm) - cfg.batch_size + 1, cfg.batch_size):
                yield data[perm[i: i + cfg.batch_size]]

    total = cfg.n_tokens * cfg.epochs
    trainer_cfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
                                   lr_end=cfg.lr / 10, lr_scheduler_name="cosineannealing",
                                   lr_decay_steps=total // cfg.batch_size, device="cpu",
                                   logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=10)
    t1 = time.perf_counter()
    sae = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches()).fit()
    fold_input_scale(sae, scale)
    sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name = cfg.model, cfg.hook_name   # what it was trained on
    return sae, acts, {"collect_seconds": t_collect, "train_seconds": time.perf_counter() - t1, "input_scale": scale}


@torch.no_grad()
def fold_input_scale(sae, scale: float) -> None:
    """Make an SAE trained on x / scale read and reconstruct raw x (exact when latents are not
    rescaled by decoder norms): W_enc /= scale, W_dec *= scale, b_dec *= scale."""
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        raise ConfigError("cannot fold a scale into an SAE that rescales latents by decoder norm")
    sae.W_enc.div_(scale)
    sae.W_dec.mul_(scale)
    sae.b_dec.mul_(scale)


@torch.no_grad()
def evaluate(handle, sae, layer: int, point: str = "resid_post", texts: list[str] | None = None,
             context: int = 128, outlier_factor: float = 3.0) -> dict[str, float]:
    """Explained variance, L0, dead-latent fraction and CE-loss recovered on held-out text."""
    texts = texts or load_text("wiki", "heldout")
    site = Site(layer, point, position=None)
    chunks = text_chunks(handle, texts, context)
    got = capture(handle, chunks, [site], batch_size=16, max_length=context + 1, progress=False)[site]
    rows = drop_outliers(torch.cat([g[1:] for g in got]), outlier_factor).float()
    feats = sae.encode(rows)
    recon = sae.decode(feats)
    ev = 1 - float(((rows - recon) ** 2).sum() / ((rows - rows.mean(0)) ** 2).sum())
    l0 = float((feats > 0).sum(-1).float().mean())
    dead = float(((feats > 0).sum(0) == 0).float().mean())
    ce = ce_loss_recovered(handle, sae, layer, point, chunks[:48], context)
    return {"explained_variance": ev, "l0": l0, "dead_fraction": dead, "n_eval_tokens": len(rows), **ce}


@torch.no_grad()
def ce_loss_recovered(handle, sae, layer: int, point: str, chunks: list[str], context: int = 128) -> dict[str, float]:
    be = get_backend(handle, "torch")
    key = (layer, Point(point))

    def splice(fn):
        def write(x):
            y = x.clone()
            y[:, 1:] = fn(x[:, 1:])
            return y
        return write

    losses = {"clean": [], "sae": [], "zero": []}
    for i in range(0, len(chunks), 8):
        batch = handle.encode(chunks[i: i + 8], max_length=context + 1)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        reconstruct = splice(lambda z: sae_on(sae, z.device).decode(sae.encode(z.float())).to(z.dtype))
        for name, writes in (("clean", None), ("sae", {key: reconstruct}), ("zero", {key: splice(torch.zeros_like)})):
            logits = be.run(ids, mask, writes=writes).logits.float()
            logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
            valid = mask[:, 1:].bool()
            losses[name].append((float(-logp[valid].sum()), int(valid.sum())))
    ce = {k: sum(a for a, _ in v) / sum(b for _, b in v) for k, v in losses.items()}
    return {"ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"],
            "ce_loss_recovered": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"])}


def save(sae, out: Path, cfg: SAETrainConfig, quality: dict, timings: dict, force: bool = False) -> Path:
    """Write the SAE in sae-lens format (cfg.json + sae_weights.safetensors, float16) plus
    recipe.json (the config that trained it) and quality.json (measured on held-out text)."""
    if cfg.layer is None:                                   # the layer `train` resolved from the preset
        cfg = dataclasses.replace(cfg, layer=Site.parse(sae.cfg.metadata.hook_name).layer)
    with atomic_dir(Path(out), force=force) as tmp:
        sae16 = sae.to(torch.float16)
        sae16.cfg.dtype = "float16"
        sae16.cfg.metadata.model_name = cfg.model
        sae16.cfg.metadata.hook_name = cfg.hook_name
        sae16.save_model(tmp)
        command = "repedit train-sae " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items())
        (tmp / "recipe.json").write_text(json.dumps({"config": asdict(cfg), "command": command, **timings}, indent=2))
        (tmp / "quality.json").write_text(json.dumps(quality, indent=2))
    return Path(out)


def check_sae(sae, handle, *, name: str | None = None, check_model: bool = True) -> None:
    """Refuse (`SAEMismatchError`) an SAE trained on another model than `handle` (its metadata's
    model_name, when it has one, must equal `handle.id`) or reading another width (d_in ≠ d_model).
    `check_model=False` skips the model-id check (e.g. the same weights loaded from a path)."""
    cfg = getattr(sae, "cfg", None)
    d_in = getattr(cfg, "d_in", None)
    trained_on = getattr(getattr(cfg, "metadata", None), "model_name", None)
    problems = []
    if check_model and trained_on and trained_on != handle.id:
        problems.append(f"it was trained on {trained_on!r}, not on {handle.id!r}")
    if d_in is not None and int(d_in) != handle.d_model:
        problems.append(f"it reads vectors of width d_in={int(d_in)}, but {handle.id!r} has d_model={handle.d_model}")
    if problems:
        raise SAEMismatchError(
            f"SAE {name or '(in memory)'} does not fit model {handle.id!r}: {'; '.join(problems)}. Train one for this "
            f"model with `repedit train-sae --model {handle.id} --layer <layer> --out saes/<name>`"
            + (" (or pass check_model=False if this is the same model under another id)" if len(problems) == 1
               and d_in is not None and int(d_in) == handle.d_model else ""))


def load_sae(path_or_release: str | Path, sae_id: str | None = None, *, handle=None, check_model: bool = True):
    """Load any sae-lens SAE from a directory (float32), or from the sae-lens registry when online.
    A relative name that is not a directory here (`saes/<dir>` or `<dir>`) is looked up in the saes/
    folders of `repedit.data` ($REPEDIT_DATA, the checkout, the SAEs shipped in the wheel).
    With `handle`, the SAE must have been trained on that model and read its width (`check_sae`)."""
    from sae_lens import SAE

    path = Path(path_or_release)
    if not path.exists() and sae_id is None:
        try:
            path = resolve_sae(path)          # where it looked, REPEDIT_DATA
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{exc}; or a sae-lens release name with sae_id= (needs network)") \
                from None
    if path.exists():
        sae = SAE.load_from_disk(str(path), dtype="float32")
        if handle is not None:
            check_sae(sae, handle, name=str(path), check_model=check_model)
        return sae
    try:
        sae = SAE.from_pretrained(str(path_or_release), sae_id, dtype="float32")
    except Exception as exc:  # offline, or unknown release
        raise ModelNotFoundError(f"cannot load SAE {path_or_release}/{sae_id} from the sae-lens registry "
                                 f"({exc.__class__.__name__}); offline, train one with `repedit train-sae`") from exc
    if handle is not None:
        check_sae(sae, handle, name=f"{path_or_release}/{sae_id}", check_model=check_model)
    return sae


def sae_on(sae, device: torch.device | str):
    """The SAE on `device` (moved in place once; a no-op when it is already there). Its weights stay
    in their own precision (float32 as loaded); callers cast activations with `.to(sae.W_dec.dtype)`."""
    if sae.W_dec.device != torch.device(device):
        sae.to(device)
    return sae


def sae_encode(sae, x: torch.Tensor) -> torch.Tensor:
    """SAE codes [n, d_sae] of activations x [n, d_in]: the SAE meets them on their device (`sae_on`), in
    its own precision."""
    return sae_on(sae, x.device).encode(x.to(sae.W_dec.dtype))
