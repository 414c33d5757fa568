"""Output folders owned by one run at a time.

Two runs writing into one folder interleave checkpoints, histories or predictions beyond repair,
so a run holds an exclusive lock on ``<folder>/.kava.lock`` while it works. The lock is an
``flock``: the kernel drops it when the process ends however it ends (``kill -9`` included), so
a stale lock file never blocks a later run. A second start checks the lock before any slow work
(`check_free`, which writes nothing) and stops with one line naming the owner.

A resumed run must be the run the folder holds: `as_json` puts a configuration in the form it is
saved in, `differences` lists what changed.

Files are written whole or not at all (`write_atomic`) or appended line by line (`append_bytes`);
a write the disk refuses is `kava.runtime.disk.WriteFailed` and leaves no partial file or line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kava.runtime.disk import WriteFailed, guarded

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
    failed while building its model) is removed again: a failed start leaves no trace. A folder
    the disk refuses to create or write is `WriteFailed`.
    """
    folder = Path(folder)
    created = not folder.exists()
    lock = folder / LOCK_FILE
    owner = f"{os.getpid()}\n".encode()
    with guarded(lock, len(owner)):  # a read-only or full disk: one line, not a traceback
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _try_lock(fd, folder)
        with guarded(lock, len(owner)):
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner, 0)
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
    """Write ``path`` beside its final name, then rename: a reader or a crash never sees half a file.

    A refused write removes the partial ``<name>.tmp`` and raises `WriteFailed` (needed: the
    encoded text's size)."""
    data = text.encode()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with guarded(path, len(data)):
            tmp.write_bytes(data)
            os.replace(tmp, path)
    except WriteFailed:
        tmp.unlink(missing_ok=True)
        raise


def append_bytes(path: Path, data: bytes, *, sync: bool = False) -> None:
    """Append ``data`` to ``path`` (``sync``: on disk before returning).

    A refused write cuts the file back to its former length, so no torn line is left for a
    resume to read, and raises `WriteFailed` (needed: ``len(data)``)."""
    before = path.stat().st_size if path.exists() else 0
    try:
        with guarded(path, len(data)), path.open("ab") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    except WriteFailed:
        if path.exists() and path.stat().st_size != before:  # on a read-only disk nothing was written
            os.truncate(path, before)
        raise
