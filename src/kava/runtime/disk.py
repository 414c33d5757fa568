"""Writes the disk refuses: full, over quota, read-only, or not ours to write.

Without this module, a full disk in the middle of a checkpoint would end in a long traceback from
whichever library happened to be writing, and leave its ``.tmp`` staging folder behind. Every write of a run
goes through `guarded` (or `kava.runtime.outputs`' ``write_atomic`` / ``append_bytes``, which use it): when the disk refuses,
the staging folder is removed, a half-appended line is cut off again, and `WriteFailed` carries
one line naming the folder, the reason and the bytes the write needs — the commands print it and
exit with `kava.runtime.exits.WRITE_FAILED`. Whatever was complete before (the last checkpoint,
the predictions so far) is untouched, so ``--resume`` continues once there is space.

Only these count as the disk refusing (`disk_errno`): ENOSPC (no space), EDQUOT (over quota),
EROFS (read-only file system), EACCES / EPERM (permission; `PermissionError`). Any other error
(a missing file, an I/O error of a failing drive, a bug) is re-raised unchanged.

The libraries a checkpoint goes through report the same failure differently, so each is read
where it keeps the operating system's error code:

- Python's own I/O (json, text, pickle, the tokenizer's config files): an `OSError` with its
  ``errno``, possibly as the cause or context of another exception;
- Rust-backed writers (safetensors, tokenizers): the code in the message, ``(os error 28)``;
- torch's zip writer (``torch.save`` to a path, which accelerate uses for optimizer, scheduler and
  RNG states): it drops the code. Its failure (a message from ``inline_container.cc``) counts as
  the disk's only when its message names one of the errors above (``strerror: Read-only file
  system``) or the file system says so now: mounted read-only (EROFS), or no block left for this
  process (ENOSPC: a write that ran out of space used up every free block before failing).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_RUST_CODE = re.compile(r"\(os error (\d+)\)")  # std::io::Error's Display
_TORCH_WRITER = ("inline_container.cc", "PytorchStreamWriter")


class WriteFailed(Exception):
    """The disk refused a write (`REFUSALS`); the message is the one line a command prints.

    Not an `OSError` on purpose: code that turns a missing or unreadable *input* file into a
    refused start (exit status 2) must not mistake a full disk for bad input.
    """

    def __init__(self, target: Path, code: int, needed: int, free: int) -> None:
        self.target, self.code, self.needed, self.free = target, code, needed, free
        super().__init__(f"cannot write {target}: {os.strerror(code)}; it needs about {needed} bytes, "
                         f"{free} are free there")


def disk_errno(exc: BaseException, folder: Path) -> int | None:
    """The refusal (an errno in `REFUSALS`) behind ``exc`` or its causes, None for any other error.

    ``folder`` is where the write went; it is asked only for torch's writer, which reports no code.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _own_errno(current, folder)
        if code is not None:
            return code if code in REFUSALS else None
        current = current.__cause__ or current.__context__
    return None


def _own_errno(exc: BaseException, folder: Path) -> int | None:
    """The OS error code ``exc`` itself carries, in whichever way its library reports it."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    message = str(exc)
    rust = _RUST_CODE.search(message)
    if rust:
        return int(rust.group(1))
    if isinstance(exc, RuntimeError) and any(mark in message for mark in _TORCH_WRITER):
        named = [code for code in REFUSALS if os.strerror(code) in message]
        return named[0] if named else _file_system_refuses(folder)
    return None


def _file_system_refuses(folder: Path) -> int | None:
    """EROFS when ``folder``'s file system is mounted read-only, ENOSPC when it has no block left
    for this process (root may use the blocks reserved for it), else None."""
    stat = os.statvfs(existing_parent(folder))
    if stat.f_flag & os.ST_RDONLY:
        return errno.EROFS
    free_blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return errno.ENOSPC if free_blocks == 0 else None


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a folder that was never created has none of its own)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def folder_bytes(path: Path) -> int:
    """Bytes in the files under ``path`` (or of the file ``path``); 0 when it does not exist."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on ``path``'s file system."""
    return shutil.disk_usage(existing_parent(path)).free


@contextlib.contextmanager
def guarded(target: Path, needed: int | Callable[[], int], *, staging: Path | None = None) -> Iterator[None]:
    """Turn a refused write inside the block into `WriteFailed` naming ``target``.

    ``needed`` is the size of the write in bytes, or a function estimating it (called only on a
    failure). The reported number is the larger of that estimate and the bytes already in
    ``staging`` when the write failed (it needed at least those). ``staging``, a folder the block
    was filling, is removed on a refusal, so nothing half-written is left; the free space is
    measured after that. On any other error it is left as it is and the error re-raised.
    """
    try:
        yield
    except Exception as exc:
        code = disk_errno(exc, target)
        if code is None:
            raise
        staged = folder_bytes(staging) if staging is not None else 0
        estimate = needed() if callable(needed) else needed
        if staging is not None and staging.exists():
            shutil.rmtree(staging)
        raise WriteFailed(target, code, max(estimate, staged), free_bytes(target)) from exc
