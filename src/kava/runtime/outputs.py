"""Output folders owned by one run at a time.

Two runs writing into one folder interleave checkpoints, histories or predictions beyond repair,
so a run holds an exclusive lock on ``<folder>/.kava.lock`` while it works. The lock is an
``flock``: the kernel drops it when the process ends however it ends (``kill -9`` included), so
a stale lock file never blocks a later run. A second start checks the lock before any slow work
(`check_free`, which writes nothing) and stops with one line naming the owner.

A resumed run must be the run the folder holds: `as_json` puts a configuration in the form it is
saved in, `differences` lists what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = ".kava.lock"


class FolderInUse(FileExistsError):
    """Another process holds the folder's lock."""


def _try_lock(fd: int, folder: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise FolderInUse(
            f"{folder} is in use by another kava run (pid {owner}); wait for it to end or choose another folder"
        ) from None


def check_free(folder: str | Path) -> None:
    """Raise `FolderInUse` if a run holds ``folder`` now; writes nothing, creates nothing."""
    lock = Path(folder) / LOCK_FILE
    if not lock.is_file():
        return
    fd = os.open(lock, os.O_RDONLY)
    try:
        _try_lock(fd, Path(folder))
    finally:
        os.close(fd)  # releases the probe's lock


@contextlib.contextmanager
def hold(folder: str | Path) -> Iterator[None]:
    """Own ``folder`` (created if absent) for the duration; raises `FolderInUse` if another run does.

    A folder this call created and that holds nothing but the lock at the end (a start that
    failed while building its model) is removed again: a failed start leaves no trace.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _try_lock(fd, folder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            lock.unlink()
            folder.rmdir()
        os.close(fd)


def as_json(data: Any) -> Any:
    """JSON's view of the data (tuples become lists), so a config compares equal to its saved copy."""
    return json.loads(json.dumps(data))


def differences(saved: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """``key: old -> new`` for every (nested) value that differs, keys named in ``ignore`` aside."""
    diffs = []
    for key in dict.fromkeys([*saved, *current]):
        if key in ignore:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += differences(old, new, ignore, f"{prefix}{key}.")
        elif old != new:
            diffs.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return diffs


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` beside its final name, then rename: a reader or a crash never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
