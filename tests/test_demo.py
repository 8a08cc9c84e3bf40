"""`repedit demo` runs the main job end to end (minutes: slow)."""

import json

import pytest


@pytest.mark.slow
def test_demo_locates_edits_attacks_exports_and_reloads(tmp_path):
    from typer.testing import CliRunner

    from repedit.cli import app

    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--subject", "France"])
    assert r.exit_code == 0, r.output
    for step in ("1. pick", "2. locate", "3. edit", "4. reload", "5. report"):
        assert step in r.output
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["clean"] > trace["corrupted"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = report["before"]["forget"], report["edits"]["rocr"]["after"]["forget"]
    assert after["mean_probability"] < 0.5 * before["mean_probability"]
    assert (tmp_path / "run" / "export" / "config.json").exists() and (tmp_path / "trace.png").exists()
