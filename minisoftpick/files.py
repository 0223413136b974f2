"""Atomic writes: every file the library writes appears whole or not at all.

``atomic_path(path)`` yields a temporary path beside ``path`` (same folder, so the rename cannot
cross file systems); when the block ends normally the file is renamed onto ``path`` with
``os.replace`` (atomic on POSIX and Windows), and when it ends with any exception, Ctrl-C
(KeyboardInterrupt) included, the temporary file is deleted and ``path`` is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """``.tmp-<pid>-<name>`` beside ``path``: hidden, unique per process, same suffix (matplotlib
    and torch pick the format from it)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode())
