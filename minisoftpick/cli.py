"""What every command line of the package shares: bad input ends as one line and exit code 2.

argparse already answers a bad flag with ``prog: error: ...`` and exit code 2. The decorator
``usage_errors`` on a command's ``main`` does the same for the ValueError, TypeError and OSError (a
missing or unreadable file) that the library raises for bad input found later (a damaged
checkpoint, unprepared data, a config that cannot be trained), so a user sees the message the
library wrote, never a traceback.
"""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

USAGE_ERROR = 2  # argparse's exit code for bad usage
USAGE_ERRORS = (ValueError, TypeError, OSError)


def usage_errors(prog: str | None = None) -> Callable[[Callable], Callable]:
    """Decorate a command's ``main``: a ValueError, TypeError or OSError it raises becomes
    ``prog: error: message`` on stderr (one line) and ``SystemExit(2)``. ``prog`` defaults to the
    script's name, as argparse's does."""

    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except USAGE_ERRORS as error:
                message = " ".join(str(error).split()) or type(error).__name__
                print(f"{prog or Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
                raise SystemExit(USAGE_ERROR) from None

        return run

    return decorate


def python_command(module: str, *args: str) -> str:
    """``<this interpreter> -m module args``: a command that works as written where it is printed
    (the interpreter relative to the working folder when it lies inside it, e.g. ``.venv/bin/python``)."""
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    return " ".join(shlex.quote(str(part)) for part in (python, "-m", module, *args))
