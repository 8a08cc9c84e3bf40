"""The scale path, exercised on the CPU with the small default model: accelerate's device_map, edits
on a dispatched model, and key statistics computed in shards and merged exactly."""

import torch

import repedit
from repedit.edits import EditStack
from repedit.edits.ablate import value_vector_edit
from repedit.fit.stats import MomentFitter
from repedit.recipes.schema import parse_recipe
from repedit.suites import load_text

TEXTS = ["The capital of France is", "Paris is a city in"]


def test_device_map_load_gives_the_same_logits_and_edits_revert_exactly(smol):
    """On a CPU-only machine accelerate places everything on the CPU (a multi-GPU split cannot be
    exercised here); the path — load with device_map, inputs sent to the embedding's device, deltas
    written on each tensor's device — is the one a GPU run takes."""
    h = repedit.load("smollm2-135m", device_map="auto")
    assert all(p.device.type == "cpu" for p in h.model.parameters())
    b = smol.encode(TEXTS)
    torch.testing.assert_close(h.logits(b["input_ids"], b["attention_mask"]),
                               smol.logits(b["input_ids"], b["attention_mask"]), atol=0, rtol=0)
    w0 = h.matrix("mlp_out", 29).param.detach().clone()
    stack = EditStack(h)
    stack.push(value_vector_edit(h, 29, [1321]))
    assert not torch.equal(h.matrix("mlp_out", 29).param, w0)
    stack.pop()
    assert torch.equal(h.matrix("mlp_out", 29).param, w0)
    recipe = parse_recipe('[model]\ndevice_map = "auto"\ndtype = "bfloat16"\n[targets]\nforget = ["France"]\n'
                          '[[edit]]\nmethod = "ga"\n')
    assert recipe.device_map == "auto" and recipe.dtype == "bfloat16"


def test_key_statistics_from_shards_merge_to_the_one_pass_result(smol, tmp_path):
    from repedit.edits.key_stats import key_fitters

    texts = load_text("wiki", "train")[:12]
    whole = key_fitters(smol, [5], texts, context=48, progress=False)[5]
    for i, shard in enumerate((texts[:5], texts[5:])):                  # two workers, two files
        key_fitters(smol, [5], shard, context=48, progress=False)[5].save(tmp_path / f"shard{i}.safetensors")
    shards = [MomentFitter.load(tmp_path / f"shard{i}.safetensors") for i in (0, 1)]
    merged = shards[0].merge(shards[1])
    a, b = merged.fit(), whole.fit()
    assert merged.n == whole.n > 100
    torch.testing.assert_close(a.second_moment, b.second_moment, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.mean, b.mean, atol=1e-6, rtol=1e-5)
