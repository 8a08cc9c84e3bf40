"""The wheel is a working library: built from the sdist, installed with no dependencies into a fresh venv,
it imports from there (not the checkout), carries its data (suites, pools, text corpora, the SAE), runs the
README's 60-second tour outside the checkout with no data settings, reuses the converted model in the
cache and downloads nothing; the CLI entry points run (see tests/wheel_check.py, also `./dev wheel-check`)."""

import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from repedit.models.cache import cache_root
from wheel_check import ROOT, SAE, build_wheel, clean_env, fresh_venv, run_cli, run_tour


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    sdist, wheel = build_wheel(work / "dist")
    return work, sdist, wheel, fresh_venv(work / "venv", wheel)


def test_wheel_and_sdist_carry_the_data(installed):
    _, sdist, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for need in ("repedit/_data/probes/facts/capitals.jsonl", "repedit/_data/probes/text/wiki.train.txt",
                 "repedit/_data/probes/memorised/natural.jsonl", f"repedit/_data/{SAE}/cfg.json",
                 f"repedit/_data/{SAE}/sae_weights.safetensors", "repedit/models/presets/smollm2-135m.json"):
        assert need in names, need
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert wheel.stat().st_size < 15e6, wheel.stat().st_size            # data ~8.6 MB raw, ~5.8 MB zipped
    tops = {n.split("/")[1] for n in tarfile.open(sdist).getnames() if n.count("/") >= 1}
    assert {"repedit", "probes", "saes", "tests", "pyproject.toml", "README.md"} <= tops, tops
    assert "docs" not in tops and "runs" not in tops and ".venv" not in tops, tops


def test_installed_wheel_runs_the_readme_tour_outside_the_checkout(installed, tmp_path):
    work, _, _, python = installed
    hf_hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    before, hub_before = _snapshot(cache_root() / "models"), _snapshot(hf_hub)
    assert "REPEDIT_PROBES" not in clean_env() and "REPEDIT_DATA" not in clean_env()
    report = run_tour(python, tmp_path / "tour")
    venv = str(work / "venv")
    assert report["repedit"].startswith(venv), report["repedit"]       # the wheel's copy, not the checkout's
    assert not report["repedit"].startswith(str(ROOT))
    assert [how for how, _ in report["probes"]] == ["package data"], report["probes"]
    assert [how for how, _ in report["saes"]] == ["package data"], report["saes"]
    assert report["preset_sae"].startswith(venv) and report["preset_sae"].endswith(SAE.split("/")[1])
    assert report["sae_d_sae"] == 2048
    assert {"capitals", "elements", "unknown-entities"} <= set(report["suites"])
    assert report["wiki_docs"] > 100 and report["pool"] > 0 and report["my_facts"] == 4
    # the converted default model in the cache is reused as it is; nothing is downloaded
    assert report["model_source"] == report["converted_dir"]
    assert _snapshot(cache_root() / "models") == before and _snapshot(hf_hub) == hub_before
    print(f"tour in the fresh venv: {report['seconds']} s")


def test_installed_cli_entry_points(installed, tmp_path):
    work = installed[0]
    assert "Usage" in run_cli(work / "venv", tmp_path, "--help")
    out = run_cli(work / "venv", tmp_path, "models")
    assert "smollm2-135m" in out and "gemma3-270m" in out, out


def test_the_checkout_editable_install_stays_invisible(installed, tmp_path):
    """The .pth names .venv's site-packages, whose own .pth files (the editable install) are not processed."""
    import subprocess

    python = installed[3]
    code = "import sys, repedit; print(repedit.__file__); print(any(p.rstrip('/') == %r for p in sys.path))"
    out = subprocess.run([str(python), "-c", code % str(ROOT)], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(installed[0] / "venv")) and out[1] == "False", out


# ---- data resolution (repedit.data), without building anything -------------------------------------------

@pytest.mark.fast
def test_settings_that_name_no_folder_are_errors_naming_them(monkeypatch, tmp_path):
    from repedit.data import DataNotFoundError
    from repedit.suites import load_suite, probes_dir

    monkeypatch.setenv("REPEDIT_PROBES", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match=r"\$REPEDIT_PROBES is set"):
        probes_dir()
    with pytest.raises(FileNotFoundError, match="REPEDIT_PROBES"):   # a FileNotFoundError too
        load_suite("capitals")
    monkeypatch.delenv("REPEDIT_PROBES")
    monkeypatch.setenv("REPEDIT_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match=r"\$REPEDIT_DATA is set"):
        probes_dir()


@pytest.mark.fast
def test_relative_sae_names_resolve_outside_the_checkout(monkeypatch, tmp_path):
    from repedit.data import data_dirs, find_sae, resolve_sae
    from repedit.errors import ModelNotFoundError
    from repedit.models.presets import preset_for
    from repedit.recipes.schema import load_recipe

    monkeypatch.chdir(tmp_path)                                      # saes/... is not relative to here
    shipped = (ROOT / SAE).resolve()
    assert find_sae(SAE) == shipped and find_sae(SAE.split("/")[1]) == shipped
    assert preset_for("smollm2-135m").sae_path() == shipped
    assert load_recipe(ROOT / "recipes" / "rocr.toml").attacks.sae == SAE  # the recipe's check finds it
    with pytest.raises(ModelNotFoundError, match="REPEDIT_DATA"):
        resolve_sae("saes/no-such-sae")
    # REPEDIT_DATA with its own saes/ comes first; the probes it lacks fall through to the checkout
    mine = tmp_path / "data" / "saes" / "my-sae"
    mine.mkdir(parents=True)
    (mine / "cfg.json").write_text("{}")
    monkeypatch.setenv("REPEDIT_DATA", str(tmp_path / "data"))
    assert resolve_sae("saes/my-sae") == mine and find_sae(SAE) == shipped
    assert [how for how, _ in data_dirs("saes")][:2] == ["$REPEDIT_DATA", "checkout"]
    assert [how for how, _ in data_dirs("probes")][0] == "checkout"
