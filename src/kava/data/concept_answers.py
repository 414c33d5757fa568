"""ProsQA answers: which of the question's two concepts an output names.

A ProsQA question asks "Is Tom a wumpus or lorpus?"; the record keeps the two concepts as its
``options`` and the official answer sentence ("Tom is a wumpus.") as its gold answer. An output
is read as the concept it names: ``"Tom is a wumpus."`` and ``"wumpus"`` both name ``wumpus``.

A concept counts as named when it stands as a whole word, in any letter case (``"Wumpus."``
names ``wumpus``): a longer run of letters, digits or underscores that contains it
(``"wumpuses"``, ``"wumpus_2"``, ``"scrompus"`` for ``rompus``) does not name it, since the
made-up words share their endings. An output that names
both concepts picks neither (rule ``both``): crediting it would reward listing the options. An
output that names neither picks nothing (rule ``none``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["named_concepts", "extract_concept"]


def named_concepts(text: str, options: Sequence[str]) -> list[str]:
    """The options `text` names as whole words (any letter case), in option order."""
    return [o for o in options
            if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", text, re.IGNORECASE)]


def extract_concept(text: str, options: Sequence[str]) -> tuple[str | None, str]:
    """The one option `text` names and the rule that read it (``concept``), or
    ``(None, "both")`` / ``(None, "none")`` when it names both or neither."""
    named = named_concepts(text, options)
    if len(named) == 1:
        return named[0], "concept"
    return None, "both" if named else "none"
