import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "repedit.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.fast
def test_help_lists_every_verb():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("models", "recall", "filter-known", "perplexity", "build-probes", "demo"):
        assert verb in out.stdout


@pytest.mark.fast
def test_models_lists_packaged_models():
    out = run("models")
    assert out.returncode == 0 and "smollm2-135m" in out.stdout and "gemma3-270m" in out.stdout


def test_recall_cli_writes_json(tmp_path):
    path = tmp_path / "r.json"
    out = run("recall", "--suite", "capitals", "--limit", "3", "--json", str(path))
    assert out.returncode == 0, out.stderr
    assert "blank" in out.stdout
    assert set(json.loads(path.read_text())["forms"]) >= {"qa", "blank", "mc", "adversarial", "paraphrase"}


@pytest.mark.fast
def test_cli_reports_typed_errors_without_traceback():
    out = run("recall", "--suite", "capitols", "--limit", "1")
    assert out.returncode == 2
    assert "SuiteNotFoundError" in out.stdout and "Traceback" not in out.stderr


def test_edit_mrp_exports_its_weight_form(tmp_path):
    out = run("edit", "mrp", "--forget", "France;Japan", "--retain", "Germany,Italy", "--layer", "2",
              "--steps", "1", "--out", str(tmp_path / "mrp"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "task 1 (writers)" in out.stdout and "weight form" in out.stdout
    manifest = json.loads((tmp_path / "mrp" / "manifest.json").read_text())
    assert manifest["edits"][0]["method"] == "mrp-folded" and manifest["edits"][0]["config"]["k"] == 4
    bad = run("edit", "mrp", "--forget", "Atlantis", "--retain", "Germany")
    assert bad.returncode == 2 and "Atlantis" in bad.stdout


def test_edit_sae_align_exports_and_reports_knownness(tmp_path):
    out = run("edit", "sae-align", "--target", "France", "--steps", "2", "--out", str(tmp_path / "sa"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "P(known) of France" in out.stdout
    manifest = json.loads((tmp_path / "sa" / "manifest.json").read_text())
    assert manifest["edits"][0]["method"] == "sae-align" and manifest["edits"][0]["config"]["steps"] == 2
    bad = run("edit", "sae-align", "--target", "Frnace")
    assert bad.returncode == 2 and "France" in bad.stdout


@pytest.mark.fast
def test_every_registered_method_has_an_edit_command_with_every_config_field():
    import re

    from typer.testing import CliRunner

    from repedit.cli import app
    from repedit.methods import METHODS
    from repedit.recipes.single import settable_fields

    runner = CliRunner()
    for name in METHODS:
        res = runner.invoke(app, ["edit", name, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
        assert res.exit_code == 0, res.output
        missing = [f for f in settable_fields(name)
                   if not re.search(rf"(?<![\w-])--{f.replace('_', '-')}(?![\w-])", res.output)]
        assert not missing, f"repedit edit {name} lacks options for {missing}"


def test_edit_options_reach_the_built_edits_config():
    out = run("edit", "rocr", "--target", "France", "--redirect-to", "the Republic of Zembla", "--suite", "capitals",
              "--stats-tokens", "6000", "--layers", "4,5")
    assert out.returncode == 0, out.stdout + out.stderr
    config = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("config "))[len("config "):])
    assert config["stats_tokens"] == 6000 and config["layers"] == [4, 5]


def test_registry_driven_edit_command_builds_the_method():
    out = run("edit", "leace", "--forget", "France", "--retain", "4", "--depth", "3", "--forms", "blank")
    assert out.returncode == 0, out.stdout + out.stderr
    config = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("config "))[len("config "):])
    assert config["depth"] == 3 and config["forms"] == ["blank"] and "capital/France" in out.stdout
    bad = run("edit", "leace", "--forget", "Frnace")
    assert bad.returncode == 2 and "France" in bad.stdout


@pytest.mark.fast
def test_presets_list_show_and_a_model_without_one(tiny_dirs):
    out = run("presets", "list")
    assert out.returncode == 0 and {"smollm2-135m", "gemma3-270m"} <= set(out.stdout.split())
    shown = run("presets", "show", "gemma3-270m")
    assert shown.returncode == 0 and '"pga"' in shown.stdout and "warnings" in shown.stdout
    missing = run("presets", "show", str(tiny_dirs["llama"]))
    assert missing.returncode == 2 and "PresetNotFoundError" in missing.stdout
    assert "repedit presets build" in missing.stdout.replace("\n", " ")
