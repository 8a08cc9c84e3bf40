"""Saved formats carry `format_version` (repedit.formats): every file written now has it and the writing
repedit's version; every reader refuses an unknown version with a FormatVersionError naming the version and
the repedit that wrote it; files written before the field existed (committed runs, shipped presets) still read."""

import json
from pathlib import Path

import pytest

from repedit.errors import FormatVersionError, ReprEditError
from repedit.formats import READS, WRITES, check_format, stamped
from repedit.version import __version__

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

ROOT = Path(__file__).resolve().parents[1]
FUTURE = {"format_version": 999, "repedit_version": "9.9.9"}


def _refused(call, *names):
    with pytest.raises(FormatVersionError) as info:
        call()
    text = str(info.value)
    assert "999" in text and "9.9.9" in text and "upgrade repedit to ≥ 9.9.9" in text, text
    assert all(n in text for n in names), text
    assert info.value.found == 999 and info.value.writer == "9.9.9"
    return info.value


def _rewrite(path: Path, **fields) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def test_check_format_reads_a_missing_field_as_1_and_names_what_it_cannot_read():
    assert set(WRITES) == set(READS) and all(WRITES[k] in READS[k] for k in WRITES)
    assert check_format("report", {}, "r.json") == 1                           # written before the field
    assert check_format("preset", {"format": 1}, "p.json", legacy="format") == 1
    assert stamped("report", {"a": 1}) == {"format_version": 1, "repedit_version": __version__, "a": 1}
    err = _refused(lambda: check_format("report", {"format_version": 999, "environment": {"repedit": "9.9.9"}},
                                        "run/report.json", redo="do it again"), "run/report.json", "do it again")
    assert isinstance(err, ReprEditError) and isinstance(err, ValueError) and err.reads == READS["report"]
    with pytest.raises(FormatVersionError, match="format_version 2.*re-run with this version"):
        check_format("preset", {"format": 2}, "p.json", legacy="format")
    for bad in (0, "1", True, None):                                       # not a version this repedit writes
        with pytest.raises(FormatVersionError, match="did not record its version"):
            check_format("report", {"format_version": bad}, "r.json")


RECIPE = """[run]
name = "formats"
seed = 0
[targets]
forget = ["France"]
retain = 2
neighbours = 1
unrelated = 0
known_only = false
[verify]
forms = ["blank"]
perplexity_docs = 0
knownness = false
[attacks]
prefixes = false
trace_prompts = 0
[[edit]]
method = "leace"
config = { forms = ["blank"] }
"""


@pytest.mark.real          # the cheapest run (~15 s): one fact, one form, LEACE, no attacks
def test_a_run_stamps_its_report_and_state_and_refuses_an_unknown_version(tmp_path):
    from repedit.recipes.report import read_report
    from repedit.recipes.run_state import RunState
    from repedit.recipes.runner import resume_run, run_recipe
    from repedit.verify.benchmarks import load_reference

    (tmp_path / "r.toml").write_text(RECIPE)
    d = run_recipe(tmp_path / "r.toml", tmp_path / "run", echo=None, progress=False).dir
    state = sorted((d / "state").glob("*.json"))
    assert [p.name for p in state] == ["before.json", "edit-00.json", "run.json", "targets.json"]
    for p in [d / "report.json", d / "resolved.json", *state]:
        data = json.loads(p.read_text())
        assert (data["format_version"], data["repedit_version"]) == (1, __version__), p
    journal = [json.loads(line) for line in (d / "journal.jsonl").read_text().splitlines()]
    assert journal and all(row["format_version"] == 1 for row in journal)
    assert read_report(d)["edits"]["leace"]["method"] == "leace"
    assert resume_run(d, echo=None, progress=False).report["format_version"] == 1     # reads every stage back
    _rewrite(d / "report.json", **FUTURE)
    _refused(lambda: read_report(d), str(d / "report.json"), "--force")
    _refused(lambda: load_reference(d / "report.json"))
    _rewrite(d / "state" / "edit-00.json", **FUTURE)
    _refused(lambda: resume_run(d, echo=None, progress=False), "edit-00.json", "start the run afresh")
    run_json = json.loads((d / "state" / "run.json").read_text())
    old = {k: v for k, v in run_json.items() if k not in ("format_version", "repedit_version")}
    (d / "state" / "run.json").write_text(json.dumps({"version": 1} | old))    # as runs wrote it before
    assert RunState.open(d).meta["version"] == 1
    (d / "state" / "run.json").write_text(json.dumps(FUTURE | old))
    _refused(lambda: RunState.open(d), "run.json")


def test_an_export_and_its_certificate_carry_the_version(tmp_path):
    import repedit
    from repedit.export import export, read_manifest
    from repedit.export.certificate import read_verification, verify_export, write_certificate
    from tiny_models import save_tiny

    h = repedit.load(str(save_tiny("llama", tmp_path / "tiny")))
    out = export(h, tmp_path / "export").path
    report = {"recipe": {"model": "tiny", "seed": 0}, "edits": {"none": {"method": "none", "after": {}}}}
    write_certificate(out, report, "none", facts={})
    for name, reader in (("manifest.json", read_manifest), ("verification.json", read_verification)):
        data = reader(out)
        assert (data["format_version"], data["repedit_version"]) == (1, __version__), name
    assert read_manifest(out)["format"] == "repedit-export/1" and verify_export(out, recompute=False).ok
    _refused(lambda: write_certificate(out, report | FUTURE, "none", facts={}), "write_certificate")
    for name, reader in (("manifest.json", read_manifest), ("verification.json", read_verification)):
        _rewrite(out / name, **FUTURE)
        _refused(lambda: reader(out), str(out / name))
    (out / "manifest.json").write_text(json.dumps({"format": "repedit-export/1", "edits": [], "tensors": {}}))
    assert read_manifest(out)["format"] == "repedit-export/1"                 # an export written before the field


def test_presets_written_now_carry_the_version_and_the_shipped_ones_still_read(tmp_path, monkeypatch):
    from repedit.models.presets import Preset, preset_for, presets_dir
    from repedit.recipes.presets import preset_dict, write

    shipped = json.loads((presets_dir() / "smollm2-135m.json").read_text())
    assert "format_version" not in shipped and shipped["format"] == 1          # written before the field
    assert preset_for("smollm2-135m").model == "smollm2-135m"
    rows = [{"layers": [3, 4, 5], "target_retention": 0.1, "neighbour_retention": 0.9}]
    sig = {"peak_depth": 12, "depths": [0, 12], "gap": [0.0, 0.2]}
    d = preset_dict("m", {"n_layers": 18, "d_model": 64}, rows, sig, sae=None, provenance={"command": "c"})
    path = write(d, tmp_path / "m.json")
    raw = json.loads(path.read_text())
    assert (raw["format_version"], raw["repedit_version"]) == (1, __version__) and "format" not in raw
    assert Preset.from_dict(raw).to_dict() == raw
    monkeypatch.setenv("REPEDIT_PRESETS", str(tmp_path))
    assert preset_for("m").n_layers == 18
    path.write_text(json.dumps(raw | FUTURE))
    _refused(lambda: preset_for("m"), str(path), "repedit presets build m")
    path.write_text(json.dumps({k: v for k, v in raw.items() if k not in FUTURE} | {"format": 2}))
    with pytest.raises(FormatVersionError, match="format_version 2"):         # the older field, another version
        preset_for("m")


def test_a_benchmark_score_carries_the_version_and_old_references_still_read(tmp_path):
    from repedit.cli.benchmark import score
    from repedit.verify.benchmarks import load_reference
    from tiny_models import save_tiny

    src = save_tiny("llama", tmp_path / "tiny")
    out = tmp_path / "score.json"
    score("counterfact", ROOT / "tests" / "fixtures" / "benchmarks" / "counterfact.json", model=str(src), split="",
          limit=2, out=out, dtype="float32")
    data = json.loads(out.read_text())
    assert (data["format_version"], data["repedit_version"]) == (1, __version__)
    assert load_reference(out)["format"] == "counterfact"
    out.write_text(json.dumps({"benchmark": data["benchmark"]}))              # written before the field
    assert load_reference(out)["format"] == "counterfact"
    out.write_text(json.dumps(data | FUTURE))
    _refused(lambda: load_reference(out), str(out))


RUNS = ROOT / "docs" / "runs"


@pytest.mark.parametrize("run", sorted(str(p.parent.relative_to(RUNS)) for p in RUNS.rglob("report.json")))
def test_the_committed_runs_still_read(run):
    from repedit.recipes.report import read_report

    report = read_report(RUNS / run)
    assert "format_version" not in report and report["edits"]
