"""Exit statuses of the ``kava`` commands, so scripts can tell a finished run from one to resume.

Documented in the README ("When things go wrong"; more in docs/usage.md); tests pin them. Any
other status (1: an uncaught exception, with Python's traceback) is a bug or a failure of the machine.
"""

OK = 0  # finished
BAD_INPUT = 2  # refused before any slow work: one line on stderr names the problem; nothing written
# Stopped by SIGINT / SIGTERM after saving its state (training checkpoint, predictions so far):
# ``--resume`` continues. 75 is sysexits' EX_TEMPFAIL, "try again later".
INTERRUPTED = 75
# The disk refused a write (full, over quota, read-only, no permission; `kava.runtime.disk`): one
# line names the folder and the bytes it needs; the staging folder is gone and the last checkpoint
# (or the predictions so far) intact, so ``--resume`` continues once there is space. 74 is
# sysexits' EX_IOERR.
WRITE_FAILED = 74
INCOMPLETE = 3  # kava report --strict: some runs lack valid metrics (named on stderr); the report is written
ABORTED = 130  # a second Ctrl-C: stopped at once, without saving beyond the last checkpoint or batch
