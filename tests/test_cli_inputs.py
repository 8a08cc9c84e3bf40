"""No traceback from any input: the command line's exit paths (repedit.cli.exits) on hostile input.

Drives the real entry point `repedit.cli.main` in-process (stdout and stderr captured, SystemExit caught)
with recipes, subjects, paths and options that hold rich markup (`[/bold]`, `[red]`, `[answer_index]`),
backslashes, quotes and unicode. Every case stops before a model is loaded (a guard fails the test if one
is), and checks: no traceback, exit 2 for a typed or usage error, 1 only with the one-line message, and
the offending user text printed as given (markup neither swallowed nor fatal).
"""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rich.table import Table

from repedit.cli import main
from repedit.cli.exits import HINT
from repedit.methods import METHODS
from repedit.suites import load_suite

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

TRACEBACK = "Traceback (most recent call last)"
QUICK = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large, HealthCheck.filter_too_much])
MARKUP = ["[/bold]", "[red]", "[answer_index]", "[/]", "[bold red]x[/]", "[link=file:///x]", "\\", "\\[", '"', "'",
          ":smile:", "é", "ß", "日本", "😀", "{s}", "%s", " ", "x"]
HAND_WRITTEN = {"rocr", "mrp", "sae-align", "pga"}
FACT_METHODS = sorted(m for m, s in METHODS.items() if s.targets == "facts" and m not in HAND_WRITTEN)
POOL_METHODS = sorted(m for m, s in METHODS.items() if s.targets == "pool" and m not in HAND_WRITTEN)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KNOWN = {f.subject for f in load_suite("capitals")}


def _text(extra_blacklist: str = "") -> st.SearchStrategy[str]:
    """Short strings of markup pieces and printable unicode (no control or line-break characters: a
    terminal prints those differently, and argv cannot hold NUL)."""
    chars = st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"),
                          blacklist_characters=extra_blacklist)
    piece = st.one_of(st.sampled_from(MARKUP), st.text(chars, min_size=1, max_size=4))
    return st.lists(piece, min_size=1, max_size=5).map("".join).map(
        lambda s: "".join(c for c in s if c not in extra_blacklist))


#: subjects no suite has (commas and ';' split lists; outer blanks are stripped; '-' starts an option)
subjects = _text(",;").map(str.strip).filter(lambda s: s and not s.startswith("-") and s not in KNOWN)
#: one path component (no '/')
names = _text("/").map(str.strip).filter(lambda s: s not in ("", ".", "..") and len(s.encode()) < 120)


class ModelWork(Exception):
    """Raised by the guard: a case reached model loading or a run."""


@contextlib.contextmanager
def no_model_work():
    """Fail loudly (exit 1 with 'ModelWork') if anything loads a model or starts a run."""
    def refuse(*a, **k):
        raise ModelWork("model work reached")

    with contextlib.ExitStack() as stack:
        for target in ("repedit.load", "repedit.models.load", "repedit.models.loader.load_hf",
                       "repedit.recipes.runner.run_recipe"):
            stack.enter_context(mock.patch(target, refuse))
        yield


def cli(*argv: str, env: dict | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `repedit ARGV` run in-process, colour codes stripped."""
    out, err = io.StringIO(), io.StringIO()
    with no_model_work(), mock.patch.dict("os.environ", env or {}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue())


def check_exit(code: int, out: str, err: str, *, allowed: tuple[int, ...] = (0, 1, 2)) -> None:
    """The invariants of every exit: no traceback, a known code, 1 only as the one-line message."""
    both = out + err
    assert TRACEBACK not in both, both
    assert "ModelWork" not in both, f"a case reached model loading: {both}"
    assert code in allowed, (code, both)
    if code == 1:
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error (") and HINT in lines[0], both


def typed(code: int, out: str, err: str, *texts: str) -> None:
    """A typed error: exit 2, one `error (Type): ...` line naming every one of `texts` (as given or repr'd)."""
    check_exit(code, out, err, allowed=(2,))
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error ("), (out, err)
    for t in texts:
        assert t in lines[0] or repr(t) in lines[0], (t, lines[0])


# ----- recipes (run --check) ------------------------------------------------------------------------------
HEAD = '[run]\nname = "t"\n[targets]\nsuite = "capitals"\n'
EDIT = '[[edit]]\nmethod = "ga"\nconfig = { steps = 2 }\n[attacks]\nrelearn_steps = 0\n'
SAFE_KEYS = ["name", "seed", "id", "dtype", "suite", "forget", "retain", "neighbours", "method", "config", "forms",
             "relearn_steps", "steps", "edit", "bogus"]
HEADERS = ["[run]", "[model]", "[targets]", "[[edit]]", "[verify]", "[attacks]", "[export]", "[bogus]"]


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)      # a TOML basic string (no control characters in `s`)


@st.composite
def toml_docs(draw) -> str:
    """Generated TOML: headers, known and unknown keys, markup-laden strings, lists, raw garbage lines."""
    value = st.one_of(subjects.map(toml_str), st.integers(-3, 50).map(str), st.sampled_from(["true", "false"]),
                      st.lists(subjects.map(toml_str), max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        lines.append(draw(st.sampled_from(HEADERS)))
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f"{draw(st.sampled_from(SAFE_KEYS))} = {draw(value)}")
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(subjects))                          # a line that is no TOML at all
    return "\n".join(lines) + "\n"


@QUICK
@given(subject=subjects)
def test_run_check_names_a_markup_subject_verbatim(tmp_path_factory, subject):
    path = tmp_path_factory.mktemp("r") / "bad.toml"
    path.write_text(HEAD + f"forget = [{toml_str(subject)}, \"France\"]\n" + EDIT, encoding="utf-8")
    code, out, err = cli("run", "--check", str(path))
    typed(code, out, err, subject)
    assert "RecipeError" in out


@settings(QUICK, max_examples=40)
@given(text=toml_docs())
def test_run_check_on_generated_toml_is_valid_or_one_typed_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("r") / "gen.toml"
    path.write_text(text, encoding="utf-8")
    code, out, err = cli("run", "--check", str(path))
    check_exit(code, out, err, allowed=(0, 2))
    if code == 0:
        assert f"{path}: valid" in out
    else:
        typed(code, out, err, str(path))


@QUICK
@given(name=names)
def test_run_check_prints_markup_paths_as_given(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("r")
    good = folder / f"{name}.toml"
    good.write_text(HEAD + 'forget = ["France", "Japan"]\n' + EDIT, encoding="utf-8")
    code, out, err = cli("run", "--check", str(good))
    check_exit(code, out, err, allowed=(0,))
    assert f"{good}: valid (1 edits: ga)" in out
    missing = folder / f"{name}-missing.toml"
    typed(*cli("run", "--check", str(missing)), str(missing))
    typed(*cli("run", "--check", str(folder)), str(folder))       # a folder, not a recipe


# ----- compare and edit: invalid options and subjects stop before the model ---------------------------------
@settings(QUICK, max_examples=15)
@given(subject=subjects, junk=subjects)
def test_compare_rejects_bad_input_before_any_model(subject, junk):
    typed(*cli("compare", f"--forget=France,{subject}", "--methods=ga", "--relearn-steps=0"), subject)
    assume(junk not in METHODS)
    typed(*cli("compare", "--forget=France", f"--methods=ga,{junk}"), junk)
    typed(*cli("compare", "--forget=France", f"--dtype={junk}"), junk)
    typed(*cli("compare", "--forget=France", f"--model={junk}"), junk)
    code, out, err = cli("compare", "--forget=France", f"--recovery={junk}")     # typer.BadParameter: usage
    check_exit(code, out, err, allowed=(2,))
    assert "Error" in err


@settings(QUICK, max_examples=12)
@given(method=st.sampled_from(FACT_METHODS), subject=subjects)
def test_edit_method_rejects_bad_subjects_before_any_model(method, subject):
    typed(*cli("edit", method, f"--forget={subject}"), subject)
    typed(*cli("edit", method, "--forget=France", f"--retain=Japan,{subject}"), subject)
    typed(*cli("edit", "rocr", f"--target={subject}"), subject)
    typed(*cli("edit", "sae-align", f"--target={subject}"), subject)
    typed(*cli("edit", "mrp", f"--forget=France;{subject}", "--retain=Germany"), subject)


@settings(QUICK, max_examples=12)
@given(junk=subjects, method=st.sampled_from(FACT_METHODS), pool_method=st.sampled_from(POOL_METHODS))
def test_edit_rejects_bad_options_before_any_model(junk, method, pool_method, tmp_path_factory):
    typed(*cli("edit", pool_method, f"--pools={junk}"), junk)
    typed(*cli("edit", "pga", f"--method={junk}"), junk)
    typed(*cli("edit", "pga", f"--pools={junk}"), junk)
    typed(*cli("edit", "neurons", f"--neurons={junk}"), junk)
    typed(*cli("edit", "value-vectors", "--layer=1", f"--columns={junk}x"), f"{junk}x")
    typed(*cli("edit", "ga", "--forget=France", f"--layers={junk}x"), f"{junk}x")       # a tuple[int, ...] field
    taken = tmp_path_factory.mktemp("out")
    typed(*cli("edit", method, "--forget=France", f"--out={taken}"), str(taken))       # exists, no --force
    for usage in (["edit", method, "--forget=France", f"--steps={junk}x"], ["edit", method, f"--bogus={junk}"],
                  ["edit", f"{junk}x"]):
        code, out, err = cli(*usage)
        check_exit(code, out, err, allowed=(2,))
        assert "Usage:" in err and "Error:" in err, (usage, out, err)
    code, out, err = cli("edit", method)          # no --forget: click's "missing option" or the typed error (typer
    check_exit(code, out, err, allowed=(2,))      # before 0.2x leaves a required list option to the command)
    assert ("Usage:" in err and "Error:" in err) or "error (InputError): --forget names no subject" in out, (out, err)


# ----- verify-export on folders that are no export ---------------------------------------------------------
@settings(QUICK, max_examples=20)
@given(name=names, garbage=st.one_of(st.binary(max_size=40).map(lambda b: b.decode("latin-1")), _text(),
                                     st.sampled_from(["[1, 2]", '"[red]x"', "null", "{", "[/bold]"])))
def test_verify_export_on_junk_is_one_typed_line(tmp_path_factory, name, garbage):
    root = tmp_path_factory.mktemp("x")
    typed(*cli("verify-export", str(root / name)), str(root / name))                # no such path
    empty = root / f"{name}-empty"
    empty.mkdir()
    typed(*cli("verify-export", str(empty)), str(empty))
    afile = root / f"{name}-file"
    afile.write_text(garbage, encoding="utf-8")
    typed(*cli("verify-export", str(afile)), str(afile))
    bad = root / f"{name}-bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(garbage, encoding="utf-8")
    (bad / "verification.json").write_text("{}", encoding="utf-8")
    code, out, err = cli("verify-export", "--no-recompute", str(bad))
    check_exit(code, out, err)
    if code == 2:
        typed(code, out, err, str(bad))


def test_verify_export_of_objects_that_are_no_export_never_traces(tmp_path):
    (tmp_path / "manifest.json").write_text('{"edits": "[red]x"}')
    (tmp_path / "verification.json").write_text('{"hashes": 3}')
    check_exit(*cli("verify-export", "--no-recompute", str(tmp_path)))


# ----- exit paths -------------------------------------------------------------------------------------------
def test_no_arguments_shows_help_and_exits_2():
    code, out, err = cli()
    check_exit(code, out, err, allowed=(2,))
    assert "Usage:" in out + err and "run" in out + err
    code, out, err = cli("--help")
    assert code == 0 and "Usage:" in out and "--debug" in out


def test_usage_errors_exit_2_with_clicks_message():
    for argv in (["--bogus"], ["run", "--nope"], ["no-such-command"], ["verify-export"]):
        code, out, err = cli(*argv)
        check_exit(code, out, err, allowed=(2,))
        assert "Usage:" in err and "Error:" in err, argv


def _boom(*a, **k):
    raise RuntimeError("boom [red]x[/red] [answer_index]\nsecond line")


def test_an_unexpected_error_is_one_line_exit_1_traceback_only_under_debug(monkeypatch):
    monkeypatch.setattr("repedit.models.presets.available", _boom)
    code, out, err = cli("presets", "list")
    check_exit(code, out, err, allowed=(1,))
    assert "error (RuntimeError): boom [red]x[/red] [answer_index] [... 1 more lines]" in out
    code, out, err = cli("--debug", "presets", "list")
    assert code == 1 and TRACEBACK in err and "RuntimeError: boom [red]x[/red]" in err and len(out.splitlines()) == 1
    code, out, err = cli("presets", "list", env={"REPEDIT_DEBUG": "1"})
    assert code == 1 and TRACEBACK in err
    code, out, err = cli("presets", "list")                       # --debug does not stick to the next call
    assert code == 1 and TRACEBACK not in err


def test_typed_errors_exit_2_and_interrupts_130(monkeypatch):
    from repedit.errors import PresetNotFoundError

    def missing(*a, **k):
        raise PresetNotFoundError("no preset for 'x[/bold]': build one with `repedit presets build x[/bold]`")

    monkeypatch.setattr("repedit.models.presets.available", missing)
    typed(*cli("presets", "list"), "no preset for 'x[/bold]': build one with `repedit presets build x[/bold]`")
    code, out, err = cli("--debug", "presets", "list")
    assert code == 2 and TRACEBACK in err

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("repedit.models.presets.available", interrupt)
    code, out, err = cli("presets", "list")
    assert code == 130 and TRACEBACK not in out + err


def test_help_text_keeps_its_brackets(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("TERMINAL_WIDTH", "300")
    code, out, _ = cli("benchmark", "score", "--help")
    assert code == 0 and "[targets.benchmark]" in out
    code, out, _ = cli("build-probes", "--help")
    assert code == 0 and "[data]" in out


def test_tables_print_markup_cells_as_given():
    from repedit.cli import run
    from repedit.cli.common import console

    cells = ["[/bold]", "[answer_index]", "a\\[b", ":smile:"]
    table = Table(title="[red]t[/red]")
    for c in cells:
        table.add_column(c)
    table.add_row(*cells)
    report = {"recipe": {"name": "n[/bold]"},
              "comparison": [{"edit": "e[red]", "family": "repedit", "forget_before": 0.5, "forget_after": 0.25}],
              "refused": {"r[/]": {"method": "ga", "error": "bad [answer_index] value"}}}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        console.print(table)
        run.print_comparison(report)
    text = out.getvalue()
    for c in [*cells, "[red]t[/red]", "n[/bold]", "e[red]", "r[/] (ga) refused: bad [answer_index] value"]:
        assert c in text, (c, text)


def test_every_command_module_prints_markup_as_given():
    import importlib
    import pkgutil

    import repedit.cli

    shown = 0
    for info in pkgutil.iter_modules(repedit.cli.__path__):
        if info.name == "__main__":                    # importing it runs the command line
            continue
        console = getattr(importlib.import_module(f"repedit.cli.{info.name}"), "console", None)
        if console is None:
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            console.print("[/bold] [red]x[/red] [answer_index] :smile: \\[")
        assert ANSI.sub("", out.getvalue()).rstrip("\n") == "[/bold] [red]x[/red] [answer_index] :smile: \\[", info.name
        shown += 1
    assert shown >= 8


@pytest.mark.parametrize("args", [[], ["run", "--check", "recipes/rocr.toml"]])
def test_the_module_entry_point_has_no_traceback(args):
    out = subprocess.run([sys.executable, "-m", "repedit.cli", *args], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert TRACEBACK not in out.stdout + out.stderr
    assert out.returncode == (2 if not args else 0), out.stdout + out.stderr


def test_compare_recipe_text_keeps_any_subject_and_name_as_toml():
    """Subjects and names outside the Basic Multilingual Plane, quotes and backslashes survive into the recipe
    `compare` writes (JSON's ASCII escapes would write surrogate pairs, which TOML rejects)."""
    import tomllib

    from repedit.recipes.compare import compare_recipe

    odd = ['Caf\u00e9 \U0001F600', 'say "hi"', "back\\slash", "[/bold]"]
    text = compare_recipe(odd, ["rocr"], name='n "\U0001F600"', relearn_steps=0, trace_prompts=0, sae=None,
                          quick=True, seed=0)
    parsed = tomllib.loads(text)
    assert parsed["targets"]["forget"] == odd and parsed["run"]["name"] == 'n "\U0001F600"'
