"""torch.distributed: two CPU ranks (gloo, launched by torchrun) give the one-process results — key moments
to float64 summation order, SAE activations, recall rows and scores exactly, perplexity to 1e-9."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import distributed_worker as W
from repedit import distributed as D
from repedit.edits.key_stats import corpus_texts, key_fitters, stats_path
from repedit.fit.saes import collect
from repedit.fit.stats import MomentFitter
from repedit.suites import load_suite, load_text
from repedit.verify.perplexity import perplexity
from repedit.verify.recall import recall

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The one-process references run on one thread, as each rank does (OMP_NUM_THREADS=1): on the CPU some
    float32 kernels round differently with the intra-op thread count (measured: an mc probability 6e-8 apart)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """tests/distributed_worker.py on 2 ranks (torchrun --standalone: a free rendezvous port), once."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "distributed_worker.py"), str(out)]
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return out, json.loads((out / "result.json").read_text()), run.stdout


def _same_fitter(got: MomentFitter, ref: MomentFitter) -> float:
    """Asserts equal n and sums (rtol 1e-10); returns max |ΔΣxxᵀ| / max |Σxxᵀ|."""
    (n, s, o), (n0, s0, o0) = got.sums(), ref.sums()
    assert n == n0 > 0
    torch.testing.assert_close(s, s0, rtol=1e-10, atol=1e-13 * float(s0.abs().max()))
    torch.testing.assert_close(o, o0, rtol=1e-10, atol=1e-13 * float(o0.abs().max()))   # sums that cancel: scale
    return float((o - o0).abs().max() / o0.abs().max())


def test_two_ranks_each_took_a_shard(launched):
    _, res, _ = launched
    assert res["world"] == 2
    for kind, shards in res["shards"].items():
        assert [s["rank"] for s in shards] == [0, 1], kind
        assert all(s["units"] > 0 and s["rows"] > 0 for s in shards), (kind, shards)


def test_key_moments_from_two_ranks_equal_one_process(launched, smol):
    out, res, _ = launched
    ref = key_fitters(smol, W.LAYERS, W.texts(), n_tokens=W.KEY_TOKENS, context=W.KEY_CONTEXT, progress=False)
    for layer in W.LAYERS:
        _same_fitter(MomentFitter.load(out / f"L{layer}.safetensors"), ref[layer])
    assert sum(s["rows"] for s in res["shards"]["key"]) == ref[W.LAYERS[0]].n      # the same token cut-off


def test_sae_activations_from_two_ranks_equal_one_process(launched, smol):
    out, res, _ = launched
    ref = collect(smol, W.SAE_LAYER, "resid_post", W.texts(), W.SAE_TOKENS, W.SAE_CONTEXT, W.OUTLIERS, progress=False)
    assert torch.equal(load_file(str(out / "acts.safetensors"))["acts"], ref)
    assert len(res["shards"]["sae"]) == 2 and ref.shape[0] == W.SAE_TOKENS


def test_recall_and_perplexity_from_two_ranks_equal_one_process(launched, smol):
    _, res, _ = launched
    ref = recall(smol, W.facts(), W.FORMS, max_new_tokens=W.NEW_TOKENS, batch_size=W.RECALL_BATCH, progress=False)
    assert res["recall"] == json.loads(json.dumps(ref.to_dict()))       # per-fact rows and summary, exactly
    ppl = perplexity(smol, W.docs(), max_length=W.PPL_LENGTH, batch_size=W.PPL_BATCH)
    assert abs(res["perplexity"] - ppl) <= 1e-9 * ppl


def test_cli_stats_and_measure_on_two_ranks(launched, smol):
    out, _, stdout = launched
    stats = json.loads((out / "cli-stats.json").read_text())
    ref = key_fitters(smol, [5], corpus_texts(), n_tokens=300, context=24, progress=False)[5]
    assert stats["world"] == 2 and stats["n"] == {"5": ref.n} and len(stats["shards"]) == 2
    _same_fitter(MomentFitter.load(out / "cli-stats" / "L5.safetensors"), ref)
    measure = json.loads((out / "cli-measure.json").read_text())
    facts = load_suite("capitals", limit=5)
    ref_recall = recall(smol, facts, ["blank", "mc"], max_new_tokens=8, batch_size=4, progress=False)
    assert measure["forms"] == json.loads(json.dumps(ref_recall.to_dict()))["forms"]
    assert measure["per_fact"] == json.loads(json.dumps(ref_recall.per_fact))
    ppl = perplexity(smol, load_text("news", "heldout")[:3], max_length=48)
    assert abs(measure["perplexity"] - ppl) <= 1e-9 * ppl
    assert stdout.count('"world": 2') == 2                     # rank 0 printed each command's JSON, rank 1 nothing


def test_world_of_one_without_torchrun_is_the_plain_computation(smol, tmp_path, monkeypatch):
    assert not D.init() and (D.rank(), D.world()) == (0, 1)
    texts = W.texts()[:20]
    got, shards = D.key_fitters_distributed(smol, [4], texts, n_tokens=200, context=W.KEY_CONTEXT)
    ref = key_fitters(smol, [4], texts, n_tokens=200, context=W.KEY_CONTEXT, progress=False)[4]
    assert got[4].n == ref.n == shards[0].rows and torch.equal(got[4].sums()[2], ref.sums()[2])
    monkeypatch.setenv("REPEDIT_CACHE", str(tmp_path))            # stored where key_moments looks
    D.store_key_fitters(smol, got, 200, context=W.KEY_CONTEXT)
    path = stats_path(smol, 4, 200, context=W.KEY_CONTEXT)
    assert path.is_relative_to(tmp_path) and torch.equal(MomentFitter.load(path).sums()[2], ref.sums()[2])
    docs = W.docs()[:3]
    assert D.perplexity_distributed(smol, docs, max_length=32)[0] == perplexity(smol, docs, max_length=32)
    facts = load_suite("capitals", limit=2)
    assert D.recall_distributed(smol, facts, ["blank", "mc"], max_new_tokens=4)[0] == \
        recall(smol, facts, ["blank", "mc"], max_new_tokens=4, progress=False)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.fast
def test_shard_then_unshard_restores_the_order(world):
    for n in range(0, 23):
        for unit in (1, 2, 4):
            items = list(range(n))
            parts = [D.shard(items, unit, part=(r, world)) for r in range(world)]
            assert sorted(x for p in parts for x in p) == items
            assert D.unshard(parts, n, unit) == items
