"""Exit statuses of the ``kava`` commands, so scripts can tell a finished run from one to resume.

Documented in the README ("When things go wrong"); tests pin them.
"""

OK = 0  # finished
FAILED = 1  # an unexpected error (a bug, or the machine): Python's traceback says where
BAD_INPUT = 2  # refused before any slow work: one line on stderr names the problem; nothing written
# Stopped by SIGINT / SIGTERM after saving its state (training checkpoint, predictions so far):
# ``--resume`` continues. 75 is sysexits' EX_TEMPFAIL, "try again later".
INTERRUPTED = 75
ABORTED = 130  # a second Ctrl-C: stopped at once, without saving beyond the last checkpoint or batch
