"""`repedit verify-export DIR` (does an export still carry what its certificate claims?) and `repedit certify
RUN_DIR` (write the certificate and model card of a run's export)."""

from __future__ import annotations

from pathlib import Path

import typer

from repedit.errors import InputError


def readable_export(directory: Path) -> None:
    """InputError for what is no export at all (no such path, a file, a missing or unreadable manifest.json
    or verification.json): the checks of `verify_export` start from two JSON objects."""
    import json

    fix = "give an export directory (the --out of `repedit edit`, or RUN_DIR/export), which holds manifest.json"
    if not directory.exists():
        raise InputError(f"{directory}: no such folder; {fix}")
    if not directory.is_dir():
        raise InputError(f"{directory} is a file, not a folder; {fix}")
    for name in ("manifest.json", "verification.json"):
        path = directory / name
        if not path.is_file():
            raise InputError(f"{directory} is not a certified repedit export (no {name}); {fix} and verification.json "
                             "(`repedit certify RUN_DIR` writes it)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:             # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InputError(f"{path} is not valid JSON ({exc}); it was edited by hand or is no repedit file") from None
        if not isinstance(data, dict):
            raise InputError(f"{path} holds a JSON {type(data).__name__}, not an object: it is no repedit {name}")


def register(app: typer.Typer) -> None:
    @app.command("verify-export")
    def verify_export_cmd(ctx: typer.Context,
                          directory: Path = typer.Argument(..., help="an export directory with verification.json"),
                          recompute: bool = typer.Option(True, "--recompute/--no-recompute",
                                                         help="re-measure the forget facts and neighbours "
                                                              "(loads the model); off: hashes only"),
                          device: str = typer.Option(None, help="device for the re-measuring model, e.g. cuda "
                                                                "(default cpu)")):
        """Recompute the hashes of every file and tensor and the cheap claims (forms on the targets, neighbours,
        after and before the edit); exit 1 with one line per mismatch."""
        if directory is None:                 # typer before 0.2x leaves a missing argument to the command
            raise typer.BadParameter("an export directory is required", ctx=ctx, param_hint="'DIRECTORY'")
        from repedit.export.certificate import verify_export

        readable_export(directory)
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
        from repedit.recipes.report import read_report

        cert = certify_run(run_dir, read_report(run_dir))
        if cert is None:
            raise InputError(f"{run_dir} has no export; add [export] edit = \"<edit name>\" to the recipe and rerun")
        typer.echo(f"wrote {cert.verification} and {cert.card} ({cert.seconds}s)")
