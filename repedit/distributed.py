"""Past one machine: statistics and measurements split over `torch.distributed` ranks (torchrun).

Each rank streams its shard and the parts are combined so that the answer equals the one-process
answer. Shards are whole batches of the one-process batch plan, dealt round-robin (batch i goes to
rank i mod world), so every batch, hence every per-item value, is computed exactly as in one process;
only the order of the final float64 sums differs (~1e-16 relative):

- key statistics (`key_fitters_distributed`, `store_key_fitters`): the batches `key_fitters` feeds
  (`key_stats.BATCH` texts, up to the batch that reaches n_tokens: the same cut-off), fitter sums
  all_reduced (float64);
- SAE activations (`collect_distributed`): groups of `saes.GROUP` chunks, ranks stop together once the
  groups up to the one-process cut-off are in; rows gathered on rank 0 in order;
- recall (`recall_distributed`): the batches of `continuation_logprobs` (`text.score_plan`) and the decode
  groups of `greedy` (`recall.greedy_plan`), values gathered to every rank, then `recall_sets` as in one process;
- perplexity (`perplexity_distributed`): batches of documents, (Σ NLL, token count) all_reduced.

Backend: NCCL when CUDA is visible (rank on cuda:LOCAL_RANK; tensors reduced there), else gloo.
Not launched by torchrun (no RANK / WORLD_SIZE): a world of one and no process group.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.distributed as dist

from repedit.edits.key_stats import BATCH, key_fitters, store_key_moments
from repedit.errors import InputError
from repedit.fit.saes import GROUP, group_rows, text_chunks
from repedit.fit.stats import MomentFitter
from repedit.forward.text import continuation_logprobs, score_plan
from repedit.sites import Site
from repedit.suites import FORMS, Fact
from repedit.verify.perplexity import batch_nll, document_batches
from repedit.verify.recall import RecallResult, greedy_group, greedy_plan, recall_sets


# ---------------------------------------------------------------- the world
def init(backend: str | None = None) -> bool:
    """Join torchrun's process group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from the environment):
    NCCL with CUDA (this rank on cuda:LOCAL_RANK), else gloo. Returns whether this call created the group
    (False when already joined or when not launched by torchrun: then a world of one)."""
    if not dist.is_available() or dist.is_initialized() or "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
        dist.init_process_group(backend, device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group(backend)
    return True


@contextmanager
def session(backend: str | None = None) -> Iterator[None]:
    """`init()` on entry; `destroy_process_group()` on exit when this session created the group."""
    created = init(backend)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _joined() else 0


def world() -> int:
    return dist.get_world_size() if _joined() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def device() -> torch.device:
    """Where this rank's model goes: cuda:LOCAL_RANK when CUDA is visible, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def _comm_device() -> torch.device:
    """Where tensors must be for a collective: the rank's GPU on NCCL, else the CPU."""
    return torch.device("cuda", local_rank()) if _joined() and dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def load(model: str, **kwargs):
    """`repedit.load` on every rank, rank 0 first (it converts into the cache if needed), each rank's model
    on `device()` unless `device_map` is given."""
    from repedit.models import load as load_model

    if device().type == "cuda":
        kwargs.setdefault("device_map", {"": str(device())})
    handle = load_model(model, **kwargs) if rank() == 0 else None
    barrier()
    return handle if handle is not None else load_model(model, **kwargs)


# ---------------------------------------------------------------- shards and collectives
@dataclass(frozen=True)
class Shard:
    """What one rank did: its units (batches, groups) and the items or tokens in them."""

    rank: int
    units: int
    rows: int


def my_units(n_units: int, part: tuple[int, int] | None = None) -> list[int]:
    """This rank's units among n_units (unit i goes to rank i mod world); `part` = (rank, world) overrides."""
    r, w = part or (rank(), world())
    return list(range(r, n_units, w))


def shard(seq: Sequence, unit: int = 1, part: tuple[int, int] | None = None) -> list:
    """This rank's items: the whole units of `unit` consecutive items it is dealt (unit i → rank i mod world)."""
    return [x for u in my_units(math.ceil(len(seq) / unit), part) for x in seq[u * unit: (u + 1) * unit]]


def unshard(parts: Sequence[Sequence], n: int, unit: int = 1) -> list:
    """Inverse of `shard`: every rank's items (`parts[r]` from rank r, as `gather_objects` returns them)
    back in the original order of n items."""
    out, taken = [], [0] * len(parts)
    for u in range(math.ceil(n / unit)):
        r, size = u % len(parts), min(unit, n - u * unit)
        out.extend(parts[r][taken[r]: taken[r] + size])
        taken[r] += size
    return out


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, …] on every rank (picklable objects, e.g. JSON-able rows; in memory)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `t` over ranks (a new tensor on t's device; reduced on the comm device)."""
    buf = t.detach().to(_comm_device(), copy=True)
    if world() > 1:
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def all_reduce_fitter(fitter: MomentFitter) -> MomentFitter:
    """A fitter holding the sums (n, Σx [d], Σxxᵀ [d, d], float64) of every rank's `fitter`; same on all ranks."""
    n, total, outer = fitter.sums()
    n_all = all_reduce_sum(torch.tensor([n], dtype=torch.int64, device=total.device))
    return MomentFitter.from_sums(int(n_all[0]), all_reduce_sum(total), all_reduce_sum(outer), fitter.dtype)


def gather_rows(rows: torch.Tensor | None, dst: int = 0) -> list[torch.Tensor] | None:
    """Every rank's rows [n_r, d] (None or [0, d] when it has none) as a list on rank `dst`; None elsewhere."""
    shapes = gather_objects(None if rows is None else (rows.shape[0], rows.shape[1], rows.dtype))
    known = [s for s in shapes if s is not None]
    if not known:
        raise InputError("gather_rows(): no rank has rows")
    if world() == 1:
        return [rows]
    width, dtype, most = known[0][1], known[0][2], max(s[0] for s in known)
    buf = torch.zeros(most, width, dtype=torch.float32, device=_comm_device())
    if rows is not None:
        buf[: rows.shape[0]] = rows.to(buf.device, torch.float32)
    bufs = [torch.empty_like(buf) for _ in range(world())] if rank() == dst else None
    dist.gather(buf, bufs, dst=dst)
    if rank() != dst:
        return None
    return [b[: (s[0] if s else 0)].to(rows.device if rows is not None else "cpu", dtype) for b, s in zip(bufs, shapes)]


def _shards(units: int, rows: int) -> tuple[Shard, ...]:
    return tuple(gather_objects(Shard(rank(), units, rows)))


# ---------------------------------------------------------------- key statistics
def key_batches(handle, texts: Sequence[str], n_tokens: int | None, context: int = 128) -> list[int]:
    """Tokens fed by each batch of `key_stats.BATCH` texts (position 0 dropped) that one-process
    `key_fitters` runs: up to and including the batch that reaches n_tokens. [n_batches]."""
    counts, seen = [], 0
    for i in range(0, len(texts), BATCH):
        n = int(handle.encode(list(texts[i: i + BATCH]), max_length=context)["attention_mask"][:, 1:].sum())
        counts.append(n)
        seen += n
        if n_tokens is not None and seen >= n_tokens:
            break
    return counts


def key_fitters_distributed(handle, layers: Sequence[int], texts: Sequence[str], *, n_tokens: int | None = None,
                            context: int = 128, progress: bool = False
                            ) -> tuple[dict[int, MomentFitter], tuple[Shard, ...]]:
    """`key_fitters` over ranks: {layer: fitter of mlp_hidden [d_mlp]} equal (to float64 summation order) to
    one process's on the same texts and n_tokens, the same on every rank; and what each rank fed."""
    layers = sorted({int(x) for x in layers})
    counts = key_batches(handle, texts, n_tokens, context)
    mine = my_units(len(counts))
    my_texts = [t for i in mine for t in texts[i * BATCH: (i + 1) * BATCH]]
    if my_texts:           # whole batches in order: key_fitters cuts them at the same boundaries
        local = key_fitters(handle, layers, my_texts, context=context, progress=progress and rank() == 0)
    else:
        local = {layer: MomentFitter(handle.d_mlp) for layer in layers}
    merged = {layer: all_reduce_fitter(local[layer]) for layer in layers}
    return merged, _shards(len(mine), sum(counts[i] for i in mine))


def store_key_fitters(handle, fitters: dict[int, MomentFitter], n_tokens: int, *, context: int = 128) -> None:
    """Rank 0 saves merged fitters of `key_stats.CORPUS` where `key_moments` / ROCR look (`store_key_moments`);
    the other ranks wait until they are written."""
    if rank() == 0:
        store_key_moments(handle, fitters, n_tokens, context=context)
    barrier()


# ---------------------------------------------------------------- SAE training activations
def collect_distributed(handle, layer: int, point: str, texts: list[str], n_tokens: int, context: int,
                        outlier_factor: float) -> tuple[torch.Tensor | None, tuple[Shard, ...]]:
    """`saes.collect` over ranks: activations [n_tokens, d] on rank 0 (None elsewhere), equal to one process's.

    Groups of `saes.GROUP` chunks are dealt round-robin; after each round the ranks share their row counts
    and stop together once the groups one process would take are in (at most world − 1 groups wasted)."""
    site = Site(layer, point, position=None)
    chunks = text_chunks(handle, texts, context)
    n_groups = math.ceil(len(chunks) / GROUP)
    mine: dict[int, torch.Tensor] = {}
    counts: list[int] = []                       # rows per group, in group order, known to every rank
    for start in range(0, n_groups, world()):
        g = start + rank()
        if g < n_groups:
            mine[g] = group_rows(handle, site, chunks[g * GROUP: (g + 1) * GROUP], context, outlier_factor)
        counts += [c for c in gather_objects(len(mine[g]) if g < n_groups else None) if c is not None]
        if sum(counts) >= n_tokens:
            break
    if sum(counts) < n_tokens:
        raise InputError(f"the corpus gave only {sum(counts)} activations; lower n_tokens or add text")
    cut = next(i for i, c in enumerate(accumulate(counts)) if c >= n_tokens) + 1   # groups one process takes
    kept = [g for g in sorted(mine) if g < cut]
    shards = _shards(len(kept), sum(counts[g] for g in kept))
    parts = gather_rows(torch.cat([mine[g] for g in kept]) if kept else None)
    if parts is None:
        return None, shards
    split = [list(p.split([counts[g] for g in range(r, cut, world())])) for r, p in enumerate(parts)]
    return torch.cat(unshard(split, cut))[:n_tokens], shards


# ---------------------------------------------------------------- recall
def _by_units(units: list[list[int]], n_rows: int, run) -> tuple[list, tuple[int, int]]:
    """`run(unit)` on this rank's units (index lists) of a one-process plan: the results of every row in the
    original order on every rank, and (units, rows) that were this rank's."""
    done = [(idx, run(idx)) for idx in shard(units)]
    out: list = [None] * n_rows
    for part in gather_objects(done):
        for idx, vals in part:
            for j, v in zip(idx, vals):
                out[j] = v
    return out, (len(done), sum(len(idx) for idx, _ in done))


def recall_distributed(handle, facts: Sequence[Fact], forms: Sequence[str] = FORMS, *, max_new_tokens: int = 24,
                       batch_size: int = 16) -> tuple[RecallResult, tuple[Shard, ...]]:
    """`recall` over ranks: the same RecallResult on every rank (every batch of `continuation_logprobs` and
    every decode group of `greedy` computed as one process computes it, results gathered), and each rank's
    units and prompts (scored + generated)."""
    counts = []

    def score(prompts, conts, size):
        vals, n = _by_units(score_plan(prompts, conts, size), len(prompts), lambda idx: continuation_logprobs(
            handle, [prompts[j] for j in idx], [conts[j] for j in idx], size))
        counts.append(n)
        return vals

    def generate(prompts, answer_ids, max_new, size, answers):
        groups = greedy_plan(handle, prompts, size, answer_ids)
        flat = {tuple(j for idx in g for j in idx): g for g in groups}
        pairs, n = _by_units(list(map(list, flat)), len(prompts), lambda idx: list(zip(*greedy_group(
            handle, prompts, flat[tuple(idx)], max_new, answers, answer_ids))))
        counts.append(n)
        return [t for t, _ in pairs], [v for _, v in pairs]

    result = recall_sets(handle, [(facts, forms)], max_new_tokens=max_new_tokens, batch_size=batch_size,
                         score=score, generate=generate)[0]
    return result, _shards(sum(b for b, _ in counts), sum(n for _, n in counts))


# ---------------------------------------------------------------- perplexity
def perplexity_distributed(handle, texts: Sequence[str], *, max_length: int = 256, batch_size: int = 8
                           ) -> tuple[float, tuple[Shard, ...]]:
    """`perplexity` over ranks (batches of documents dealt round-robin; Σ NLL and token count all_reduced):
    the same float on every rank, and what each rank scored."""
    if isinstance(texts, str) or not texts:
        raise InputError("perplexity_distributed() takes a non-empty list of texts")
    mine = shard(document_batches(handle, texts, max_length=max_length, batch_size=batch_size))
    parts = [batch_nll(handle, rows) for rows in mine]
    local = torch.tensor([sum(p[0] for p in parts), sum(p[1] for p in parts)], dtype=torch.float64, device="cpu")
    nll, count = all_reduce_sum(local).tolist()
    if count == 0:
        raise InputError("no scorable tokens: every text is a single token")
    return math.exp(nll / count), _shards(len(parts), int(sum(p[1] for p in parts)))
