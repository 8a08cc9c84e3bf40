"""The shared edit contract (tests/test_edit_contract.py) on a tiny random Llama, fast tier: no real model.

Every registered method (`repedit.methods.METHODS`) plus the ablations, × {float32, bfloat16}, on a
3-layer, 32-wide Llama with tied embeddings (like SmolLM2) and the committed tiny tokenizer
(tests/fixtures/tiny-tokenizer): apply/revert bit-exact, rank as claimed, merged == hook form, failed
edits leave the bytes identical, export reloads in plain transformers and reproduces the edited logits,
the manifest carries every config field. Targets are inline: five capital facts, a six-key text pool
(unscreened: a random model memorises nothing) and a random sae-lens TopK SAE of the model's width.
A tiny model has no preset, so layers and depths are given in each method's settings.
"""


import pytest
import torch

from conftest import TEST_DEVICE, refuse_packaged
from edit_contract import (  # noqa: F401  (the shared contract's tests, run on this module's cases)
    test_apply_changes_logits_and_revert_is_bit_exact,
    test_export_reloads_in_plain_transformers_and_reverts,
    test_merge_equals_hook_form,
    test_non_finite_and_mismatched_edits_leave_weights_identical,
    test_rank_is_what_it_claims,
)
from repedit.edits.ablate import neuron_edit, value_vector_edit
from repedit.methods import METHODS, Context, method_config
from repedit.suites import facts_from_records
from repedit.suites.pools import Pool, PoolKey

pytestmark = pytest.mark.fast

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
NAME = "tiny-llama"
SAE_LAYER = 2                                   # the random SAE reads resid_post of the last layer

# Tiny settings per registered method (mechanics, not effect), layers/depths for 3 layers. ROCR: a random
# 64-wide MLP's key spectrum is flat (no eigenvalue under 2% of the largest), so its null space needs 0.1.
TINY = {
    "rocr": {"layers": [1], "stats_tokens": 2_000, "null_threshold": 0.1},
    "mrp": {"layer": 1, "steps": 3},
    "sae-align": {"layers": [1], "steps": 3, "lr": 3e-2, "forms": ["blank"], "n_reference": 6, "n_retain": 4,
                  "lm_texts": 2, "lm_batch": 1},
    "pga": {"depth": 2},
    "md-pga": {"depth": 2, "k": 2},
    "adversarial-pga": {"depth": 2, "max_rounds": 2},
    "pga-trained": {"depth": 2, "layers": [0, 1], "steps": 3, "lr": 2e-2, "refit_every": 2, "n_contexts": 2,
                    "batch_pairs": 6, "clean_texts": 2},
    "ga": {"layers": [1, 2], "steps": 3, "lr": 1e-4, "stop_at": 0.0},
    "npo": {"layers": [1, 2], "steps": 3, "lr": 1e-4, "stop_at": 0.0},
    "rmu": {"layer": 2, "steps": 2, "lr": 1e-4, "stop_at": 0.0, "retain_texts": 2},
    "leace": {"depth": 2},
    "leace-pool": {"depth": 2},
}
HALF_LR = {"ga": 1e-2, "npo": 1e-2, "rmu": 1e-2}   # bf16 spacing: a larger step (PrecisionError otherwise)
ABLATIONS = {
    "value-vector-zero": lambda h: value_vector_edit(h, 2, [5, 17]),
    "value-vector-noise": lambda h: value_vector_edit(h, 2, [5], mode="noise", noise_std=0.5),
    "neuron-suppress": lambda h: neuron_edit(h, {1: [3], 2: [40]}, factor=0.0),
    "neuron-amplify": lambda h: neuron_edit(h, {1: [3]}, factor=2.0),
}
CASES = sorted(METHODS) + sorted(ABLATIONS)

FACTS = {f.subject: f for f in facts_from_records(
    [{"subject": s, "relation": "capital", "answer": a} for s, a in
     [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo")]])}
POOL = Pool("tiny-text", tuple(PoolKey(*k) for k in [
    ("hamlet", "To be, or not to be, that is the question", "Whether to live or not, that is what I ask",
     "Should one exist or not: this is the matter"),
    ("lincoln", "Four score and seven years ago our fathers brought forth", "Eighty-seven years back our "
     "ancestors created", "Some eighty-seven years earlier our forebears founded"),
    ("dickens", "It was the best of times, it was the worst of times", "Those were the finest days and the "
     "darkest days", "It was a great age and a terrible age"),
    ("melville", "Call me Ishmael. Some years ago, never mind how long", "My name is Ishmael. A few years back, "
     "whenever it was", "You may call me Ishmael. Years ago, the exact time aside"),
    ("austen", "It is a truth universally acknowledged, that a single man", "Everyone agrees that an unmarried man",
     "All people accept that a bachelor"),
    ("lorem", "Lorem ipsum dolor sit amet, consectetur adipiscing elit", "Placeholder words follow here, as "
     "filler text", "Some dummy sentence stands in for real text"),
]))


def test_every_registered_method_has_a_tiny_case():
    assert set(TINY) == set(METHODS), f"add tiny settings for {set(METHODS) - set(TINY)} to TINY"


@pytest.fixture(scope="module", autouse=True)
def tiny_only(tmp_path_factory):
    """Loading or converting a packaged model fails this module; caches (ROCR key stats) go to a temp dir;
    one intra-op thread (ops this small only lose to thread hand-offs, badly on a busy machine)."""
    import repedit.models.loader
    import repedit.models.registry

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPEDIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(repedit.models.registry, "ensure_converted", refuse_packaged)
        mp.setattr(repedit.models.loader, "ensure_converted", refuse_packaged)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_models import save_tiny

    # initializer_range 0.1: at the default 0.02 a random model's logits barely depend on its MLPs
    return save_tiny("llama", tmp_path_factory.mktemp("tiny") / NAME, tie_word_embeddings=True, initializer_range=0.1)


@pytest.fixture(scope="module")
def tiny_in(tiny_dir):
    """tiny_in(dtype, untied=False): the tiny model loaded through repedit in `dtype`, one handle each."""
    import repedit
    from repedit.edits.fold import untie_embeddings

    handles = {}
    placement = {} if TEST_DEVICE == "cpu" else {"device_map": {"": TEST_DEVICE}}

    def get(dtype: torch.dtype, untied: bool = False):
        if (dtype, untied) not in handles:
            h = repedit.load(str(tiny_dir), dtype=dtype, **placement)
            if untied:
                assert untie_embeddings(h) is True
            handles[(dtype, untied)] = h
        return handles[(dtype, untied)]

    return get


@pytest.fixture(scope="module")
def sae_dir(tiny_dir, tmp_path_factory):
    """A random sae-lens TopK SAE of the tiny model's width, saved where `load_sae` reads it."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    meta = SAEMetadata(model_name=str(tiny_dir), hook_name=f"blocks.{SAE_LAYER}.hook_resid_post")
    out = tmp_path_factory.mktemp("sae") / "tiny-sae"
    TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=8, metadata=meta)).save_model(out)
    return str(out)


def build(name: str, h, sae: str):
    if name in ABLATIONS:
        return ABLATIONS[name](h), None
    spec = METHODS[name]
    values = dict(TINY[name])
    if h.dtype != torch.float32 and name in HALF_LR:
        values["lr"] = HALF_LR[name]
    cfg = method_config(name, values)
    if spec.targets == "pool":
        ctx = Context(h, pool=POOL, contexts=3)
    else:
        ctx = Context(h, forget=[FACTS["France"]], retain=[FACTS[s] for s in ("Germany", "Italy", "Spain")],
                      known=["Japan", "Germany", "Italy", "Russia", "China", "Mexico", "Spain"], sae=sae)
    (edit,) = spec.build(ctx, cfg)
    return edit, cfg


PARAMS = [pytest.param((c, d), id=f"{c}-{d}") for d in DTYPES for c in CASES]


@pytest.fixture(scope="module", params=PARAMS)
def made(request, tiny_in):
    name, dtype = request.param
    needs_untied = name in METHODS and METHODS[name].needs_untied
    h = tiny_in(DTYPES[dtype], untied=needs_untied)
    edit, cfg = build(name, h, request.getfixturevalue("sae_dir") if name == "sae-align" else None)
    return name, dtype, edit, cfg, h



@pytest.fixture
def float32_handle(tiny_in):
    return lambda: tiny_in(torch.float32)


@pytest.fixture
def export_base_id():
    return NAME
