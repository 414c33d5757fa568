"""Graceful stops: SIGINT / SIGTERM ask a long loop to stop at its next safe point.

A cluster's preemption notice is SIGTERM, Ctrl-C is SIGINT; both should cost at most the unit of
work in flight (a training step, an evaluation batch), never what is already done. The loop
polls ``requested`` at each safe point, saves and returns; a second SIGINT raises
``KeyboardInterrupt`` at once for a user who will not wait.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from typing import Any


class StopSignal:
    """While entered, SIGINT / SIGTERM set ``requested`` (and say what happens next) instead of killing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, what_next: str) -> None:
        self.requested = False
        self._what_next = what_next  # e.g. "stopping after this step (checkpoint, then exit)"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is not threading.main_thread():
            warnings.warn("running outside the main thread: SIGINT/SIGTERM will not stop it cleanly", stacklevel=2)
            return self
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: {self._what_next}", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StoppedAfterSaving(Exception):
    """A run stopped by a signal at a safe point, its state saved: running it again with resume
    continues it (`kava.runtime.exits.INTERRUPTED`). A second Ctrl-C is ``KeyboardInterrupt`` instead."""
