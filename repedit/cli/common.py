"""Helpers shared by the command modules: the console, list parsing, JSON output, show-and-export.

The console never reads rich markup or emoji codes: every message may carry user text (subjects, paths,
model ids, exception text), printed as given. Style a literal part with `rich.text.Text` (`styled`)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from repedit.errors import InputError, close_matches


def make_console(**kw) -> Console:
    """A console that prints text as given: no markup, no emoji codes, no re-wrapping of long lines
    (tables still fit the width). `kw`: more `Console` settings (width, stderr)."""
    return Console(markup=False, emoji=False, soft_wrap=True, **kw)


console = make_console()
FORMS = ("qa", "blank", "paraphrase", "adversarial")


def ints(spec: str) -> list[int]:
    """Comma-separated integers ("4,5,6")."""
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {spec!r}") from None


def names(spec: str | None) -> list[str]:
    """Comma-separated names, blanks dropped."""
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


def styled(label: str, style: str, rest: str = "") -> Text:
    """`label` in `style`, then `rest` plain: a message with a coloured lead and user text after it."""
    return Text.assemble((label, style), rest)


def check_subjects(suite: str, subjects: list[str]) -> None:
    """Every one of `subjects` is a subject of `suite` (reads the suite file only: no model)."""
    from repedit.suites import load_suite

    known = {f.subject for f in load_suite(suite)}
    for s in subjects:
        if s not in known:
            raise InputError(f"{s!r} is not a subject of suite {suite!r} (close: {close_matches(s, known, 3)})")


def write_json(path: Path | None, payload: dict) -> None:
    """Write `payload` as JSON to `path` (nothing when None)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {path}")


def facts_about(suite: str | None, subjects: list[str]) -> list:
    """The facts of `suite` whose subject is one of `subjects` (none without a suite)."""
    if not suite:
        return []
    from repedit.suites import load_suite

    return [f for f in load_suite(suite) if f.subject in subjects]


def facts_or_fail(suite: str, subjects: list[str]) -> list:
    """The facts of `suite` about `subjects`; InputError when one subject has none."""
    facts = facts_about(suite, subjects)
    missing = sorted(set(subjects) - {f.subject for f in facts})
    if missing or not facts:
        raise InputError(f"no facts in suite {suite!r} for {missing or subjects}; see probes/facts/{suite}.jsonl")
    return facts


def refuse_existing(out: Path | None, force: bool) -> None:
    """InputError when `out` exists and --force was not given."""
    if out is not None and out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to replace it")


def show_and_export(handle, edits, facts, out: Path | None, force: bool) -> None:
    """Push `edits` (one Edit or several), print each one's rank, stats and config and the facts'
    answer probability before/after, then export to `out` if given."""
    from repedit.edits.stack import EditStack
    from repedit.forward.answer_scores import answer_logprobs

    refuse_existing(out, force)
    edits = list(edits) if isinstance(edits, (list, tuple)) else [edits]
    before = answer_logprobs(handle, facts, FORMS).exp() if facts else None
    stack = EditStack(handle)
    for edit in edits:
        stack.push(edit)
        console.print(f"applied {edit.method}: rank per tensor {edit.rank}; stats {edit.stats}")
        console.print(f"config {json.dumps(edit.config, default=str)}", soft_wrap=True)
    if facts:
        after = answer_logprobs(handle, facts, FORMS).exp()
        table = Table(title="answer probability (mean of qa, blank, paraphrase, adversarial)")
        for col in ("fact", "before", "after"):
            table.add_column(col)
        for f, b, a in zip(facts, before, after):
            table.add_row(f.id, f"{b:.3f}", f"{a:.3f}")
        console.print(table)
    export_stack(handle, stack, out, force)


def export_stack(handle, stack, out: Path | None, force: bool) -> None:
    """Export `stack` to `out` (nothing when None) and print where and how close the reload is."""
    if out is not None:
        from repedit.export.directory import export

        res = export(handle, out, stack, force=force)
        console.print(f"exported to {res.path} (reloaded logits differ by {res.max_logit_diff:.2g}) in {res.seconds}s")
