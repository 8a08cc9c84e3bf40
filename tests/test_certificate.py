"""The erasure certificate: one real run of the default model with an export (module fixture), its
verification.json and model card, and `verify-export` catching one changed byte and one edited claim."""

import json
import struct
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from repedit.errors import InputError
from repedit.export.certificate import certify_run, read_verification, verify_export, write_certificate

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
RECIPE = """[run]
name = "certified"
seed = 0
[targets]
forget = ["France", "Japan"]
retain = ["Germany", "Italy"]
neighbours = 2
unrelated = 0
known_only = false
[verify]
forms = ["blank", "mc"]
perplexity_docs = 1
knownness = false
[attacks]
prefixes = false
quantisation = ["gguf-q8_0", "int4-g32"]
weight_diff = true
extraction = true
membership = true
remind = true
[[edit]]
method = "ga"
config = { steps = 4, lr = 1e-4, layers = [20, 21], stop_at = 0.0 }
[export]
edit = "ga"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run directory, report) of a real run whose GA edit is exported, with its certificate written."""
    from repedit.recipes.runner import run_recipe

    root = tmp_path_factory.mktemp("certificate")
    (root / "certified.toml").write_text(RECIPE)
    res = run_recipe(root / "certified.toml", root / "run", echo=None)
    assert (res.dir / "export" / "verification.json").is_file()   # the runner certifies what it exports
    r = _cli(["certify", str(res.dir)])                    # certify_run on report.json, facts rebuilt from the suite
    assert r.exit_code == 0 and "wrote" in r.output, r.output
    assert certify_run(root, res.report) is None           # no export there
    return res.dir, json.loads((res.dir / "report.json").read_text())


def _cli(args: list[str]):
    from repedit.cli import certify

    app = typer.Typer()
    certify.register(app)
    app.command("noop")(lambda: None)        # two commands, so typer keeps the command names
    return CliRunner().invoke(app, args)


def _flip_byte(path: Path, tensor: str) -> int:
    """XOR the lowest byte of the middle element of `tensor` in a safetensors file; returns its offset."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        start, end = json.loads(fh.read(n))[tensor]["data_offsets"]
    offset = 8 + n + start + (end - start) // 2 // 4 * 4
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 1]))
    return offset


def test_the_certificate_and_the_card_are_written(run):
    from huggingface_hub import ModelCard

    d, report = run
    export = d / "export"
    rec = read_verification(export)
    manifest = json.loads((export / "manifest.json").read_text())
    touched = set(manifest["tensors"])
    assert touched == {"model.layers.20.mlp.down_proj.weight", "model.layers.21.mlp.down_proj.weight"}
    assert rec["touched_tensors"] == manifest["tensors"]
    stored = rec["hashes"]["tensors"]["model.safetensors"]
    assert all(stored[t] == manifest["tensors"][t]["sha256_after"] for t in touched)   # file bytes = in-memory hash
    assert {"model.safetensors", "edits.safetensors", "originals.safetensors", "manifest.json",
            "config.json"} <= set(rec["hashes"]["files"])
    m = rec["measurements"]
    assert m["before"] == report["before"] and m["after"] == report["edits"]["ga"]["after"]
    assert m["comparison"]["forget_after"] < m["comparison"]["forget_before"]
    assert rec["recipe"]["text"] == RECIPE and rec["seeds"]["recipe"] == 0
    assert rec["edit_config"]["layers"] == [20, 21] and rec["versions"]["torch"] and rec["versions"]["transformers"]
    assert [f["subject"] for f in rec["checks"]["forget"]["facts"]] == ["France", "Japan"]
    assert rec["checks"]["forget"]["forms"] == ["blank", "mc"] and rec["checks"]["neighbours"]["forms"] == ["blank"]
    assert rec["checks"]["forget"]["facts"][0]["forms"]["mc"]["options"]          # whole Fact records
    card = ModelCard.load(export / "README.md")
    assert card.data.base_model == HUB_ID and card.data.license == "apache-2.0"
    assert {"repedit", "unlearning", "model-editing"} <= set(card.data.tags)
    assert card.data.library_name == "transformers"
    for text in ("France, Japan", "originals.safetensors", "repedit.export.directory.revert", report["command"],
                 "repedit verify-export", "model.layers.20.mlp.down_proj.weight", "| blank |"):
        assert text in card.text, text
    with pytest.raises(InputError, match="valid: \\['ga'\\]"):
        write_certificate(export, report, "rocr")
    with pytest.raises(InputError, match="forget: 0 facts for 2 measured"):
        write_certificate(export, report, "ga", facts={"forget": [], "neighbours": []})


def test_verify_export_passes_on_an_untouched_export(run):
    d, _ = run
    res = verify_export(d / "export")
    assert res.ok, res.lines()
    # forget: 2 forms + mean, neighbours: 1 form + mean; after the edit and after reverting it
    assert res.checked["claims"] == 2 * (3 + 2) and res.checked["files"] >= 8 and res.checked["tensors"] > 200
    r = _cli(["verify-export", str(d / "export"), "--no-recompute"])
    assert r.exit_code == 0 and "OK" in r.output, r.output


def test_one_changed_byte_is_named_by_its_tensor(run):
    d, _ = run
    weights, tensor = d / "export" / "model.safetensors", "model.layers.20.mlp.down_proj.weight"
    offset = _flip_byte(weights, tensor)
    try:
        res = verify_export(d / "export", recompute=False)
        assert not res.ok
        lines = res.lines()
        assert any(line.startswith(f"tensor {tensor} [touched by the edit]") and "model.safetensors" in line
                   for line in lines), lines
        assert any(line.startswith("file model.safetensors") for line in lines), lines
        assert len(lines) == 2, lines                                  # nothing else is blamed
        r = _cli(["verify-export", str(d / "export"), "--no-recompute"])
        assert r.exit_code == 1 and f"MISMATCH tensor {tensor}" in r.output, r.output
        import subprocess
        import sys  # the installed entry point exits 1 too
        p = subprocess.run([sys.executable, "-m", "repedit.cli", "verify-export", str(d / "export"), "--no-recompute"],
                           capture_output=True, text=True)
        assert p.returncode == 1 and "MISMATCH" in p.stdout, (p.returncode, p.stdout, p.stderr)
    finally:
        with open(weights, "r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)[0]
            fh.seek(offset)
            fh.write(bytes([byte ^ 1]))
    assert verify_export(d / "export", recompute=False).ok


def test_an_edited_claim_fails_the_recompute(run):
    d, _ = run
    path = d / "export" / "verification.json"
    text = path.read_text()
    rec = json.loads(text)
    rec["measurements"]["after"]["forget"]["forms"]["blank"]["probability"] += 0.01
    path.write_text(json.dumps(rec))
    try:
        assert verify_export(d / "export", recompute=False).ok          # the hashes cannot see it
        res = verify_export(d / "export")
        assert [m.name for m in res.mismatches] == ["after.forget.blank"], res.lines()
        assert res.mismatches[0].kind == "claim" and "tolerance" in str(res.mismatches[0])
    finally:
        path.write_text(text)


def test_recovery_attacks_run_from_the_recipe_into_the_report_and_the_certificate(run):
    run_dir, report = run
    att = report["edits"]["ga"]["attacks"]
    assert set(att) >= {"quantisation", "weight_diff", "extraction", "membership", "remind"}
    assert set(report["before"]) >= {"quantisation", "extraction", "membership", "remind"}
    rec = att["quantisation"]["recovered"]
    assert set(rec) == {"gguf-q8_0", "int4-g32"} and abs(rec["gguf-q8_0"]["recovered"]) < 0.5   # int8-like: harmless
    surv = att["quantisation"]["survival"]["gguf-q8_0"]
    assert set(surv) == set(report["edits"]["ga"]["rank"]) and all(s["survival"] > 0.5 for s in surv.values())
    assert all(len(p["singular_values"]) >= 1 for p in att["weight_diff"]["params"].values())
    row = report["comparison"][0]
    for col in ("quant_gguf-q8_0_recovered", "weight_diff_named", "extraction_tuned_any_layer_after",
                "mia_min_k_pp_auc_after", "remind_auc_after"):
        assert col in row, col
    page = (run_dir / "report.html").read_text()
    for title in ("Quantisation attack", "Weight-diff attack", "White-box extraction", "Membership inference",
                  "REMIND"):
        assert title in page, title
    for plot in ("quantisation", "weight_diff", "extraction", "membership", "remind"):
        assert (run_dir / "plots" / f"{plot}.png").is_file(), plot
    claims = read_verification(run_dir / "export")["measurements"]["attacks"]
    assert claims["quantisation"]["recovered"] == rec                  # the certificate carries every attack
