"""`repedit verify-export DIR` (does an export still carry what its certificate claims?) and `repedit certify
RUN_DIR` (write the certificate and model card of a run's export)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from repedit.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("verify-export")
    def verify_export_cmd(directory: Path = typer.Argument(..., help="an export directory with verification.json"),
                          recompute: bool = typer.Option(True, "--recompute/--no-recompute",
                                                         help="re-measure the forget facts and neighbours "
                                                              "(loads the model); off: hashes only"),
                          device: str = typer.Option(None, help="device for the re-measuring model, e.g. cuda "
                                                                "(default cpu)")):
        """Recompute the hashes of every file and tensor and the cheap claims (forms on the targets, neighbours,
        after and before the edit); exit 1 with one line per mismatch."""
        from repedit.export.certificate import verify_export

        res = verify_export(directory, recompute=recompute, device_map={"": device} if device else None)
        for note in res.notes:
            typer.echo(f"note: {note}")
        c = res.checked
        typer.echo(f"checked {c['files']} files, {c['tensors']} tensors, {c['claims']} claims in {res.seconds}s")
        if not res.ok:
            for line in res.lines():
                typer.echo(f"MISMATCH {line}")
            typer.echo(f"{directory}: {len(res.mismatches)} mismatches; the weights or the claims were changed")
            raise typer.Exit(1)
        what = "the weights and the re-measured claims match" if c["claims"] else "the weights match"
        typer.echo(f"{directory}: OK, {what} the certificate")

    @app.command("certify")
    def certify_cmd(run_dir: Path = typer.Argument(..., help="a run directory (report.json + export/)")):
        """Write verification.json and the model card README.md into RUN_DIR/export (facts rebuilt from the
        recipe's suite)."""
        from repedit.export.certificate import certify_run

        if not (run_dir / "report.json").exists():
            raise InputError(f"{run_dir} has no report.json; run a recipe first (`repedit run RECIPE`)")
        cert = certify_run(run_dir, json.loads((run_dir / "report.json").read_text()))
        if cert is None:
            raise InputError(f"{run_dir} has no export; add [export] edit = \"<edit name>\" to the recipe and rerun")
        typer.echo(f"wrote {cert.verification} and {cert.card} ({cert.seconds}s)")
