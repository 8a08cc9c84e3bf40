"""How the command line ends: one exit code and at most one line of message per way of failing.

- a typed error (`ReprEditError`): exit 2, `error (Type): message` (the message names the fix);
- a usage error (typer's / click's: bad option, missing argument, no arguments): exit 2, click's message;
- `typer.Exit(n)`: exit n; `typer.Abort` (EOF at a prompt): exit 1, "Aborted!";
- Ctrl-C: exit 130, "interrupted";
- any other exception: exit 1, `error (Type): message` and a hint to rerun with --debug.

Tracebacks are printed (to stderr) only under `repedit --debug` or REPEDIT_DEBUG=1. Messages are printed
as given, never read as rich markup.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from repedit.cli.common import make_console, styled
from repedit.errors import ReprEditError

DEBUG_ENV = "REPEDIT_DEBUG"
HINT = f"rerun as `repedit --debug ...` (or with {DEBUG_ENV}=1) to see the traceback"
INTERRUPTED = 130

_state = {"debug": False}


def set_debug(on: bool) -> None:
    """Turn tracebacks on or off for this invocation (the global --debug option)."""
    _state["debug"] = bool(on)


def debug_on() -> bool:
    """--debug was given, or REPEDIT_DEBUG is set to something other than '', '0' or 'false'."""
    return _state["debug"] or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def message(exc: BaseException) -> str:
    """The text of `exc` (a KeyError's message without the quotes its str() adds)."""
    if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} [... {len(lines) - 1} more lines]"


def _usage(exc: Exception) -> int:
    """Show a typer / click usage error as click does; its exit code (2 for usage errors)."""
    code = int(getattr(exc, "exit_code", 2))
    if type(exc).__name__ == "NoArgsIsHelpError":      # typer printed the help when it raised this
        text = exc.format_message() if hasattr(exc, "format_message") else ""
        if text.strip():
            typer.echo(text)
        return code
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"Error: {exc}", err=True)
    return code


def _usage_types() -> tuple[type, ...]:
    """The usage-error classes: typer's own (newer typer vendors click and raises TyperException) and click's
    (older typer re-exports click's; a library may raise the real click's)."""
    kinds = [getattr(typer, "TyperException", None)]
    try:
        from click import ClickException
        kinds.append(ClickException)
    except ImportError:
        pass
    return tuple(k for k in kinds if isinstance(k, type))


def _is_usage(exc: BaseException) -> bool:
    return isinstance(exc, _usage_types())


def _traceback(exc: BaseException) -> None:
    if debug_on():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def report(exc: BaseException) -> int:
    """Print `exc` the way its kind asks (module doc) and return the exit code."""
    out = make_console()
    if isinstance(exc, ReprEditError):
        _traceback(exc)
        out.print(styled(f"error ({type(exc).__name__}):", "red", f" {message(exc)}"))
        return 2
    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, typer.Abort)
                                              and isinstance(exc.__cause__, KeyboardInterrupt)):
        typer.echo("interrupted", err=True)
        return INTERRUPTED
    if isinstance(exc, typer.Abort):
        typer.echo("Aborted!", err=True)
        return 1
    if _is_usage(exc):
        return _usage(exc)
    _traceback(exc)
    out.print(styled(f"error ({type(exc).__name__}):", "red",
                     f" {_one_line(message(exc)) or '(no message)'}; {HINT}"))
    return 1
