import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "repedit.cli", *args], capture_output=True, text=True, timeout=900)


def test_help_lists_every_verb():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("models", "recall", "filter-known", "perplexity", "build-probes", "demo"):
        assert verb in out.stdout


def test_models_lists_packaged_models():
    out = run("models")
    assert out.returncode == 0 and "smollm2-135m" in out.stdout and "gemma3-270m" in out.stdout


def test_recall_cli_writes_json(tmp_path):
    path = tmp_path / "r.json"
    out = run("recall", "--suite", "capitals", "--limit", "3", "--json", str(path))
    assert out.returncode == 0, out.stderr
    assert "blank" in out.stdout
    assert set(json.loads(path.read_text())["forms"]) >= {"qa", "blank", "mc", "adversarial", "paraphrase"}


def test_cli_reports_typed_errors_without_traceback():
    out = run("recall", "--suite", "capitols", "--limit", "1")
    assert out.returncode == 2
    assert "SuiteNotFoundError" in out.stdout and "Traceback" not in out.stderr
