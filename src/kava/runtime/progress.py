"""Progress that reads well both on a terminal and in a log file.

On a terminal (or in a notebook) `progress` returns tqdm's bar. Anywhere else — stderr redirected
to a file, a pipe, a batch job's log — a bar redraws itself with carriage returns, and the log of
a long run ends up holding thousands of redraws on what a pager shows as one line. There
`progress` returns `LineProgress`, which writes a whole line now and then instead: each time
another 5 % of the work is done, or when ``every_s`` seconds have passed since the last line,
whichever comes first. The line is tqdm's own text for the bar's fields (``tqdm.format_meter``),
without the bar::

    train:  30% 120/400 [00:25<00:58,  4.80it/s, loss=0.71, lr=0.0001]

Both take the same calls (``update(n)``, ``set_postfix(...)``, ``close()``, ``with``), so a call
site does not know which it got.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from numbers import Number
from typing import Any, TextIO

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as chosen_tqdm  # what tqdm.auto picked: the notebook bar, or tqdm.std's
from tqdm.std import tqdm as plain_tqdm

LINES = 20  # one line per 5 % of the work
EVERY_S = 30.0  # ... or after this long without one
# The bar's fields in the bar's order and formats, without the bar itself.
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress(total: int, desc: str, *, initial: int = 0, unit: str = "it", disable: bool = False,
             file: TextIO | None = None, every_s: float = EVERY_S, **bar_options: Any) -> tqdm | LineProgress:
    """A progress display for ``total`` units of work, ``initial`` of them already done (a resumed
    run): tqdm's bar where one can be drawn — ``file`` (stderr by default) is a terminal, or this
    is a notebook, where tqdm.auto draws a widget — else `LineProgress`. ``bar_options`` go to the
    bar only (e.g. ``dynamic_ncols``); a disabled display is tqdm's, which shows nothing."""
    file = sys.stderr if file is None else file
    notebook = chosen_tqdm is not plain_tqdm
    if disable or notebook or _is_terminal(file):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=file, **bar_options)
    return LineProgress(total, desc, initial=initial, unit=unit, file=file, every_s=every_s)


def _is_terminal(file: TextIO) -> bool:
    """Whether ``file`` is a terminal; a stream without ``isatty`` (a bare writer) is not."""
    isatty = getattr(file, "isatty", None)
    return bool(isatty is not None and isatty())


class LineProgress:
    """tqdm's calls, written as whole newline-terminated lines (see the module docstring)."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "it", file: TextIO | None = None,
                 every_s: float = EVERY_S):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = self.initial = initial
        self.file = sys.stderr if file is None else file
        self.postfix = ""
        self._start = self._last_line = time.monotonic()
        self._last_n = initial  # n at the last line written (none yet: the starting point)
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._due():
            self._write()

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """The fields shown after the rate, formatted as tqdm formats them (numbers shortened,
        keyword fields sorted after ``ordered_dict``'s). ``refresh`` is accepted for tqdm's
        signature: a line is written only on `update`'s schedule."""
        fields = {**(ordered_dict or {}), **{k: kwargs[k] for k in sorted(kwargs)}}
        self.postfix = ", ".join(f"{k}={tqdm.format_num(v) if isinstance(v, Number) else str(v).strip()}"
                                 for k, v in fields.items())

    def close(self) -> None:
        """Write the last count if no line shows it yet (a run stopped between two marks)."""
        if not self._closed and self.n != self._last_n:
            self._write()
        self._closed = True

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _due(self) -> bool:
        """A line is due when ``n`` has crossed the next 5 % mark of ``total`` (counted from 0, so a
        resumed run writes at the same marks) or ``every_s`` has passed since the last line."""
        crossed = bool(self.total) and self.n * LINES // self.total > self._last_n * LINES // self.total
        return crossed or time.monotonic() - self._last_line >= self.every_s

    def _write(self) -> None:
        now = time.monotonic()
        line = tqdm.format_meter(self.n, self.total or None, now - self._start, prefix=self.desc, unit=self.unit,
                                 postfix=self.postfix or None, initial=self.initial,
                                 bar_format=LINE_FORMAT if self.total else None)
        print(line, file=self.file, flush=True)
        self._last_line, self._last_n = now, self.n
