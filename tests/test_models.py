import pytest
import torch

import repedit
from repedit.errors import InputError, ModelNotFoundError, ReprEditError
from repedit.models import is_cached


def test_default_model_loads_offline_and_knows_paris(smol):
    assert is_cached("smollm2-135m")
    assert (smol.n_layers, smol.d_model, smol.d_mlp) == (30, 576, 1536)
    batch = smol.encode(["The capital of France is"])
    out = smol.model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=smol.pad_id)
    assert "Paris" in smol.tokenizer.decode(out[0, batch["input_ids"].shape[1]:])


def test_handle_exposes_writable_matrices(smol):
    ref = smol.matrix("mlp_out", 8)
    assert ref.name == "model.layers.8.mlp.down_proj.weight"
    assert ref.orientation == "out_in" and tuple(ref.param.shape) == (smol.d_model, smol.d_mlp)
    assert ref.param is smol.model.model.layers[8].mlp.down_proj.weight


@pytest.mark.parametrize("bad", ["smolm2-135m", "no-such-model"])
@pytest.mark.fast
def test_unknown_packaged_id_names_close_matches(bad):
    with pytest.raises(ModelNotFoundError) as err:
        repedit.load(bad)
    assert "smollm2-135m" in str(err.value)


@pytest.mark.fast
def test_missing_hub_model_offline_says_how_to_get_it():
    with pytest.raises(ModelNotFoundError) as err:
        repedit.load("someorg/definitely-not-cached-model")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "download" in msg


@pytest.mark.fast
def test_missing_local_path_and_empty_id():
    with pytest.raises(ModelNotFoundError):
        repedit.load("./no/such/dir")
    with pytest.raises(InputError):
        repedit.load("")
    assert issubclass(ModelNotFoundError, ReprEditError) and issubclass(ModelNotFoundError, FileNotFoundError)


@pytest.mark.fast
def test_local_directory_loads_any_supported_architecture(tiny_dirs):
    for arch, path in tiny_dirs.items():
        h = repedit.models.load_hf(path)
        assert h.layout.family in (arch.split("_")[0], "llama", "gemma3", "gpt_neox"), arch
        assert h.n_layers == 3
        logits = h.logits(**h.encode(["hello world"]))
        assert logits.shape[-1] == h.d_vocab and torch.isfinite(logits).all()


def test_toy_memorisation_test_bed(toy):
    from repedit.models.toy import exact_recall

    cfg = toy.extras["toy_config"]
    seqs = toy.extras["sequences"]
    rates = {k: exact_recall(toy.model, v, cfg.prefix_len).float().mean().item() for k, v in seqs.items()}
    assert rates["memorised"] >= 0.99, rates
    assert rates["once"] <= 0.01 and rates["heldout"] <= 0.01, rates


def test_toy_is_deterministic_given_seed(toy, tmp_path, monkeypatch):
    from repedit.models.toy import ToyConfig, _sequences

    a, b = _sequences(ToyConfig(seed=3)), _sequences(ToyConfig(seed=3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(_sequences(ToyConfig(seed=4))["memorised"], a["memorised"])


def test_importing_repedit_puts_large_cpu_tensors_on_huge_pages():
    """repedit turns on torch's transparent-huge-page allocation (THP_MEM_ALLOC_ENABLE, unless the user set
    it): a 512 MB tensor then costs a few hundred page faults, not 131 k (4 KB pages); =0 turns it off."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("this kernel gives no transparent huge pages")
    code = ("import repedit, torch, resource\n"
            "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "x = torch.ones(128 * 1024 * 1024)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    huge, small = (int(subprocess.run([sys.executable, "-c", code], env=env | flag, capture_output=True, text=True,
                                      check=True).stdout) for flag in ({}, {"THP_MEM_ALLOC_ENABLE": "0"}))
    assert huge < 5000 < 100_000 < small
