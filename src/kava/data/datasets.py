"""One registry for every dataset kava trains or evaluates on, from a local folder or the hub.

`load_dataset` turns a registered name (``gsm8k-aug``, ``svamp``, …) or a file path into
`Record`s. Where a registered name is read from, in this order (`named_data_dir`):

1. the folder passed explicitly: ``data_dir=`` here, ``--data-dir`` on the commands;
2. else the folder in ``$KAVA_DATA_DIR``;
3. else the dataset's hub id (through the optional ``datasets`` package, ``pip install kava[hub]``).

There is no built-in folder. A named folder (1 or 2) is the only source: when it lacks the file,
loading raises `DatasetNotFoundError` naming the folder and the file instead of falling through
to the hub, so a run never reads other data than the folder its user named. A name always means
that dataset: when its source cannot provide it the loader raises instead of substituting a
look-alike, because silently training on, or reporting accuracy for, the wrong data is worse
than stopping.

Gold answers are stored in canonical form (``"2,125"`` -> ``"2125"``, ``43.0`` -> ``"43"``;
see `kava.data.answers.canonical_gold`), and a row whose gold answer is not a number is a format
error: an unreadable gold answer would count every prediction for it as wrong. MATH-500 and
AQuA-RAT are the exceptions, and their records say so (``answer_kind``, `kava.data.grading`):
MATH's gold is LaTeX that math-verify must be able to parse, AQuA's is an option letter with
the five options kept on the record and written into the question.

Records are validated without requiring steps (evaluation sets have no chain of thought, and
iCoT's GSM8k-AUG test split has 18 rows with an empty one); training code that needs steps calls
``record.validate(need_steps=True)``.

Coconut's ProsQA (``prosqa``; `kava.data.prosqa`) has concept answers (``answer_kind``
``concept``); its ``train`` split is generated, seeded, without any problem of its valid and
test splits.

iCoT's multiplication (``mult4``, ``mult5``; `kava.data.multiplication`) has digit-sequence
answers (``answer_kind`` ``digits``), and its ``train`` split is generated, seeded, leaving out
every problem of the dataset's valid and test splits (in either operand order).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kava.data.answers import canonical_gold
from kava.data.choice_answers import LETTERS, parse_options
from kava.data.convert import gsm8k_record, math_solution_steps, rationale_steps, to_aug, to_aug_nl
from kava.data.grading import check_gold
from kava.data.multiplication import generate_problems, looks_like_mult, mult_record, parse_mult_line, problem_key
from kava.data.prosqa import generate_rows, prosqa_record
from kava.data.records import Record, RecordError

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "LoadedDataset",
    "DatasetSpec",
    "REGISTRY",
    "dataset_entry",
    "dataset_names",
    "named_data_dir",
    "load_dataset",
]

ENV_DATA_DIR = "KAVA_DATA_DIR"


class DatasetError(Exception):
    """Base class for dataset problems."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The named data folder lacks the file, or (no folder named) the hub cannot provide it; the
    message names the folder and file, or says how to point at local files."""


class DatasetFormatError(DatasetError, ValueError):
    """A row or file that cannot be read; the message starts with ``file:line`` (or ``hub-id row N``)."""


@dataclass
class LoadedDataset:
    """Records plus where they came from and what was left out, so reports can state both."""

    name: str
    split: str | None
    source: str
    records: list[Record]
    skip_reasons: list[str] = field(default_factory=list)  # malformed rows skipped (skip_bad), where and why
    # Well-formed rows a derived set cannot use (a GSM8K row without <<…>> annotation has no
    # equation-only CoT): left out, but not errors.
    left_out: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        """Rows of the source that are not among the records, for whatever reason."""
        return len(self.skip_reasons) + len(self.left_out)

    def skip_notice(self) -> str | None:
        """One line saying what was left out and why, or None when nothing was."""
        parts = []
        if self.skip_reasons:
            parts.append(f"skipped {len(self.skip_reasons)} malformed row(s)")
        if self.left_out:
            why = self.left_out[0].rpartition(": ")[2]  # one reason per derived set
            parts.append(f"left out {len(self.left_out)} well-formed row(s) ({why})")
        return f"{' and '.join(parts)} of {self.source}" if parts else None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


# --------------------------------------------------------------------------- row parsers
# Each parser turns one raw row (a text line or a decoded JSON object) into a Record and raises
# ValueError with a short reason; the caller prefixes the location.

_STEP_GAP = re.compile(r"(?<=>>)\s+(?=<<)")

def _split_cot(cot: str) -> tuple[str, ...]:
    """CODI/iCoT keep the CoT as one string ``"<<a>> <<b>>"``; steps are split between ``>>`` and ``<<``.

    Only whitespace between ``>>`` and ``<<`` separates steps, so a natural-language CoT string
    stays one step rather than being cut at arbitrary spaces.
    """
    cot = cot.strip()
    return tuple(_STEP_GAP.split(cot)) if cot else ()


def _text(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        raise ValueError(f"missing field '{key}'")
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"field '{key}' must be text, got {type(value).__name__}")
    return value


def _gold(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        raise ValueError(f"missing field '{key}'")
    try:
        return canonical_gold(row[key])
    except ValueError as exc:
        raise ValueError(f"field '{key}': {exc}") from exc


def _parse_icot(line: str) -> Record:
    """iCoT text line: ``question||<<e1>> <<e2>> #### N``; a multiplication row (``a * b||…``, digits
    spaced) is read as one (`kava.data.multiplication`)."""
    if looks_like_mult(line):
        return parse_mult_line(line)
    if "||" not in line:
        raise ValueError("expected 'question||steps #### answer', found no '||'")
    question, _, rest = line.partition("||")
    if "####" not in rest:
        raise ValueError("expected 'question||steps #### answer', found no '####'")
    cot, _, answer = rest.rpartition("####")
    try:
        gold = canonical_gold(answer)
    except ValueError as exc:
        raise ValueError(f"answer: {exc}") from exc
    return Record(question=question.strip(), steps=_split_cot(cot), answer=gold)


def _parse_pal(row: Mapping[str, Any]) -> Record:
    """PAL jsonl (GSM-Hard, MAWPS): ``{"input", "target"}``; PAL's ``code`` is not a CoT, so no steps."""
    return Record(question=_text(row, "input").strip(), steps=(), answer=_gold(row, "target"))


def _parse_svamp(row: Mapping[str, Any]) -> Record:
    """SVAMP: the problem is ``Body + " " + Question`` (CODI's concatenation); no steps."""
    question = f"{_text(row, 'Body').strip()} {_text(row, 'Question').strip()}"
    return Record(question=question, steps=(), answer=_gold(row, "Answer"))


def _parse_plain(row: Mapping[str, Any]) -> Record:
    """Neutral JSONL: ``question``, ``answer`` and ``steps`` (list) or CODI's ``cot`` (string)."""
    question = _text(row, "question").strip()
    answer = _gold(row, "answer")
    if "steps" in row:
        steps = row["steps"]
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise ValueError("field 'steps' must be a list of strings")
        return Record(question=question, steps=tuple(s.strip() for s in steps), answer=answer)
    cot = row.get("cot", "")
    if isinstance(cot, list) and all(isinstance(s, str) for s in cot):
        return Record(question=question, steps=tuple(s.strip() for s in cot), answer=answer)
    if not isinstance(cot, str):
        raise ValueError("field 'cot' must be a string or a list of strings")
    return Record(question=question, steps=_split_cot(cot), answer=answer)


def _parse_math500(row: Mapping[str, Any]) -> Record:
    """MATH-500: ``problem``, ``solution`` (its paragraphs are the NL steps), LaTeX ``answer``,
    ``subject`` and ``level`` (kept for per-subject and per-level accuracy)."""
    level = row.get("level")
    if isinstance(level, bool) or not isinstance(level, (int, str)) or not str(level).strip():
        raise ValueError(f"field 'level' must be a number 1-5, got {level!r}")
    record = Record(
        question=_text(row, "problem").strip(),
        steps=math_solution_steps(_text(row, "solution")),
        answer=_text(row, "answer").strip(),
        answer_kind="math",
        meta={"subject": _text(row, "subject").strip(), "level": str(level).strip()},
    )
    check_gold(record)
    return record


def _parse_aqua(row: Mapping[str, Any]) -> Record:
    """AQuA-RAT: ``question``, five ``options`` ``"A)…"``, NL ``rationale``, ``correct`` letter.

    The question a model sees lists the options (``Answer Choices: (A) 21 (B) …``, the format
    of the CoT-prompting papers), since the answer is a choice among them."""
    options = parse_options(row.get("options"))
    correct = _text(row, "correct").strip()
    if correct not in LETTERS:
        raise ValueError(f"field 'correct' must be one of {', '.join(LETTERS)}, got {correct!r}")
    choices = " ".join(f"({letter}) {text}" for letter, text in zip(LETTERS, options))
    return Record(
        question=f"{_text(row, 'question').strip()}\nAnswer Choices: {choices}",
        steps=rationale_steps(_text(row, "rationale")),
        answer=correct,
        answer_kind="choice",
        options=options,
    )


_PARSERS: dict[str, Callable[[Any], Record]] = {
    "icot": _parse_icot,
    "gsm8k": gsm8k_record,  # GSM8K jsonl; steps keep the raw solution lines
    "pal": _parse_pal,
    "svamp": _parse_svamp,
    "plain": _parse_plain,
    "math500": _parse_math500,
    "aqua": _parse_aqua,
    "prosqa": prosqa_record,  # Coconut's ProsQA JSON rows
    "mult": parse_mult_line,  # iCoT multiplication .txt rows
}


def _detect(row: Any) -> str:
    """Pick a JSON row format from its keys; raises ValueError naming the keys it expected."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    keys = set(row)
    if {"problem", "solution", "answer", "subject", "level"} <= keys:
        return "math500"
    if {"idx_to_symbol", "edges", "root", "target", "neg_target"} <= keys:
        return "prosqa"
    if {"question", "options", "correct"} <= keys:
        return "aqua"
    if {"input", "target"} <= keys:
        return "pal"
    if {"Body", "Question", "Answer"} <= keys:
        return "svamp"
    if "question" in keys and ("steps" in keys or "cot" in keys):
        return "plain"
    if {"question", "answer"} <= keys:
        answer = row["answer"]
        return "gsm8k" if isinstance(answer, str) and "####" in answer else "plain"
    raise ValueError(
        f"unrecognised row with fields {sorted(keys)}; expected question/answer(/steps|cot), "
        "question/answer with '#### N' (GSM8K), input/target (PAL), Body/Question/Answer (SVAMP), "
        "problem/solution/answer/subject/level (MATH-500) or question/options/rationale/correct (AQuA-RAT)"
    )


# --------------------------------------------------------------------------- file readers
# Readers yield (location, raw row). JSON decoding happens per row, later, so that one bad line
# is one skippable row rather than a failed file.

_JSON_LINE = object()  # marker: the payload is a JSON text still to decode


def _read_rows(path: Path) -> tuple[str | None, Iterator[tuple[str, Any, object | None]]]:
    """Return (fixed format or None to detect from keys, iterator of (where, payload, marker))."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({exc})") from exc
    if suffix == ".txt":
        return "icot", _lines(path, text, None)
    if suffix == ".jsonl" or (suffix == ".json" and not text.lstrip().startswith("[")):
        # Hugging Face's Dataset.to_json writes JSON lines even to a .json file.
        return None, _lines(path, text, _JSON_LINE)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        return None, ((f"{path} item {i}", item, None) for i, item in enumerate(data, start=1))
    raise DatasetFormatError(f"{path}: unsupported file type '{suffix}'; expected .txt (iCoT), .jsonl or .json")


def _lines(path: Path, text: str, marker: object | None) -> Iterator[tuple[str, Any, object | None]]:
    # Split on "\n" only: str.splitlines also breaks at U+2028 and similar characters, which
    # JSON written with ensure_ascii=False keeps raw inside strings (GSM8K train has some).
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():  # blank lines carry no row
            yield f"{path}:{number}", line, marker


# --------------------------------------------------------------------------- row loop

def _collect(
    rows: Iterator[tuple[str, Any, object | None]],
    fmt: str | None,
    source: str,
    *,
    skip_bad: bool,
    limit: int | None,
    transform: Callable[[Record], Record | None] | None = None,
    transform_reason: str = "",
) -> tuple[list[Record], list[str], list[str]]:
    """Parse rows into validated records, stopping once `limit` records are kept.

    Malformed rows raise `DatasetFormatError` or, with `skip_bad`, are listed in the skip
    reasons. `transform` may drop a well-formed row (returning None); that is listed apart (the
    third value) because it is not an error. A source with no row at all
    (an empty or blank file) is a `DatasetFormatError`: there is nothing to train or score on.
    """
    records: list[Record] = []
    reasons: list[str] = []
    left_out: list[str] = []
    seen = False
    for where, payload, marker in rows:
        seen = True
        if limit is not None and len(records) >= limit:
            break
        try:
            if marker is _JSON_LINE:
                try:
                    payload = json.loads(payload)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
            row_fmt = fmt or _detect(payload)
            if row_fmt not in ("icot", "mult") and not isinstance(payload, dict):
                raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
            record = _PARSERS[row_fmt](payload).validate(need_steps=False, where=where)
        except RecordError as exc:
            if not skip_bad:
                raise DatasetFormatError(str(exc)) from exc
            reasons.append(str(exc))
            continue
        except ValueError as exc:
            message = f"{where}: {exc}"
            if not skip_bad:
                raise DatasetFormatError(message) from exc
            reasons.append(message)
            continue
        fmt = row_fmt  # the first good row fixes the file's format
        if transform is not None:
            converted = transform(record)
            if converted is None:
                left_out.append(f"{where}: {transform_reason}")
                continue
            record = converted
        records.append(record)
    if not seen and limit != 0:
        raise DatasetFormatError(f"{source}: no rows (empty or blank)")
    return records, reasons, left_out


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class HubSource:
    """One hub copy of a split: ``datasets.load_dataset(repo, config, split=s)`` for each s in
    `splits`, concatenated (ChilleD/SVAMP stores SVAMP's 1,000 problems as train + test)."""

    repo: str
    config: str | None
    splits: tuple[str, ...]
    fmt: str


@dataclass(frozen=True)
class SplitSpec:
    local: str  # path relative to the data dir
    fmt: str
    hub: tuple[HubSource, ...] = ()
    # n > 0: the split is generated n×n multiplication (`_generate_split`), not read; `local` is
    # then the file it needs (its problems are left out).
    generate: int = 0
    # A split kept from the public files (iCoT's 5×5 test): refused, saying so, unless present.
    held_back: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    splits: Mapping[str, SplitSpec]
    default_split: str
    # For derived sets: the style to convert GSM8K rows to ("aug" / "aug-nl").
    derive: str | None = None


def _aug_hub(repo: str, split: str) -> HubSource:
    return HubSource(repo, None, (split,), "plain")


MULT_TRAIN_SIZE = 100_000  # generated multiplication training problems when no limit is given (iCoT's: 808,000)

PROSQA_TRAIN_SIZE = 17_886  # generated ProsQA training problems when no limit is given (Coconut's train split)
_PROSQA_GENERATED = "prosqa-generated"  # the format of a generated ProsQA split (`_generate_prosqa`)

_GSM8K_TRAIN = SplitSpec("gsm8k/train.jsonl", "gsm8k", (HubSource("openai/gsm8k", "main", ("train",), "gsm8k"),))

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "gsm8k-aug",
            "GSM8k-AUG (iCoT): equation-only CoT; valid/test local as iCoT .txt, train (385,620 rows) on the hub",
            {
                "train": SplitSpec("gsm8k-aug/train.txt", "icot",
                                   (_aug_hub("whynlp/gsm8k-aug", "train"), _aug_hub("zen-E/GSM8k-Aug", "train"))),
                "valid": SplitSpec("gsm8k-aug/valid.txt", "icot",
                                   (_aug_hub("whynlp/gsm8k-aug", "validation"), _aug_hub("zen-E/GSM8k-Aug", "validation"))),
                "test": SplitSpec("gsm8k-aug/test.txt", "icot",
                                  (_aug_hub("whynlp/gsm8k-aug", "test"), _aug_hub("zen-E/GSM8k-Aug", "test"))),
            },
            "test",
        ),
        DatasetSpec(
            "gsm8k-aug-nl",
            "GSM8k-AUG-NL: natural-language CoT; hub only unless gsm8k-aug-nl/<split>.jsonl is present",
            {
                split: SplitSpec(f"gsm8k-aug-nl/{split}.jsonl", "plain",
                                 (_aug_hub("whynlp/gsm8k-aug-nl", hub), _aug_hub("zen-E/GSM8k-Aug-NL", hub)))
                for split, hub in (("train", "train"), ("valid", "validation"), ("test", "test"))
            },
            "test",
        ),
        DatasetSpec(
            "gsm8k",
            "GSM8K (openai/grade-school-math): train 7,473, test 1,319; steps are the raw solution lines",
            {
                "train": _GSM8K_TRAIN,
                "test": SplitSpec("gsm8k/test.jsonl", "gsm8k", (HubSource("openai/gsm8k", "main", ("test",), "gsm8k"),)),
            },
            "test",
        ),
        DatasetSpec(
            "gsm8k-train-aug",
            "derived from gsm8k/train.jsonl (7,473 rows), a small real training set usable offline: "
            "equation-only CoT from the <<…>> annotations (rows without one skipped); not GSM8k-AUG",
            {"train": _GSM8K_TRAIN},
            "train",
            derive="aug",
        ),
        DatasetSpec(
            "gsm8k-train-aug-nl",
            "derived from gsm8k/train.jsonl (7,473 rows), a small real training set usable offline: "
            "natural-language CoT (solution lines, annotations removed); not GSM8k-AUG-NL",
            {"train": _GSM8K_TRAIN},
            "train",
            derive="aug-nl",
        ),
        DatasetSpec(
            "gsm8k-hard",
            "GSM-Hard (PAL): GSM8K test with larger numbers; float targets",
            {"test": SplitSpec("gsm-hard/gsmhardv2.jsonl", "pal",
                               (HubSource("reasoning-machines/gsm-hard", None, ("train",), "pal"),))},
            "test",
        ),
        DatasetSpec(
            "svamp",
            "SVAMP: all 1,000 problems (question = Body + ' ' + Question)",
            {"test": SplitSpec("svamp/SVAMP.json", "svamp",
                               (HubSource("ChilleD/SVAMP", None, ("train", "test"), "svamp"),))},
            "test",
        ),
        DatasetSpec(
            "math500",
            "MATH-500 (the PRM800K test subset of MATH): 500 problems, 7 subjects, levels 1-5; LaTeX answers "
            "scored by math-verify; the solution's paragraphs are its NL CoT",
            {"test": SplitSpec("math500/test.jsonl", "math500",
                               (HubSource("HuggingFaceH4/MATH-500", None, ("test",), "math500"),))},
            "test",
        ),
        DatasetSpec(
            "aqua",
            "AQuA-RAT: multiple choice A-E (test 254, dev 254); the options are part of the question, the "
            "rationale is its NL CoT",
            {
                "test": SplitSpec("aqua/test.json", "aqua", (HubSource("deepmind/aqua_rat", "raw", ("test",), "aqua"),)),
                "dev": SplitSpec("aqua/dev.json", "aqua", (HubSource("deepmind/aqua_rat", "raw", ("validation",), "aqua"),)),
            },
            "test",
        ),
        DatasetSpec(
            "mult4",
            "4x4 multiplication (iCoT): digits least significant first, partial products as CoT; valid/test "
            f"1,000 each, train generated ({MULT_TRAIN_SIZE:,} unless limited) without any valid/test problem",
            {
                "train": SplitSpec("mult/4x4/valid.txt", "mult", generate=4),
                "valid": SplitSpec("mult/4x4/valid.txt", "mult"),
                "test": SplitSpec("mult/4x4/test.txt", "mult"),
            },
            "test",
        ),
        DatasetSpec(
            "mult5",
            "5x5 multiplication (iCoT): valid 1,000; test held back (iCoT's test_bigbench, not public here); "
            f"train generated ({MULT_TRAIN_SIZE:,} unless limited) without any valid (or test, when present) problem",
            {
                "train": SplitSpec("mult/5x5/valid.txt", "mult", generate=5),
                "valid": SplitSpec("mult/5x5/valid.txt", "mult"),
                "test": SplitSpec("mult/5x5/test.txt", "mult", held_back=True),
            },
            "valid",
        ),
        DatasetSpec(
            "prosqa",
            "ProsQA (Coconut): 'Is Tom a A or B?' over a random DAG of made-up concepts; valid 300, test 500; "
            f"train generated ({PROSQA_TRAIN_SIZE:,} unless limited) without any valid/test problem; concept answers",
            {
                "train": SplitSpec("prosqa/valid.json", _PROSQA_GENERATED),
                "valid": SplitSpec("prosqa/valid.json", "prosqa"),
                "test": SplitSpec("prosqa/test.json", "prosqa"),
            },
            "test",
        ),
        DatasetSpec("multiarith", "MultiArith (MAWPS, PAL copy)", {"test": SplitSpec("pal/mawpsmultiarith.jsonl", "pal")}, "test"),
        DatasetSpec("addsub", "AddSub (MAWPS, PAL copy)", {"test": SplitSpec("pal/mawpsaddsub.jsonl", "pal")}, "test"),
        DatasetSpec("singleeq", "SingleEq (MAWPS, PAL copy)", {"test": SplitSpec("pal/mawpssingleeq.jsonl", "pal")}, "test"),
    )
}


def hub_repo(name: str | None) -> str | None:
    """The Hub dataset a registered dataset comes from (its training split's source, else its
    default split's), for a model card's ``datasets`` field; None for a file or generated data."""
    spec = REGISTRY.get(name or "")
    if spec is None:
        return None
    split = spec.splits.get("train") or spec.splits[spec.default_split]
    return split.hub[0].repo if split.hub else None


def dataset_names() -> list[str]:
    """The registered names, in registry order."""
    return list(REGISTRY)


def dataset_entry(name: str, split: str | None = None) -> DatasetSpec | None:
    """The registry entry `name` names (None: a file), once `name` and `split` are known good.

    The one check of a dataset name and split, shared by `load_dataset` and the run config, so
    a config is refused for exactly the names and splits loading would refuse. Raises
    `DatasetNotFoundError` for an unknown name or split, ValueError for a split of a file.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        if not Path(name).expanduser().is_file():
            raise DatasetNotFoundError(f"'{name}' is neither a registered dataset ({', '.join(REGISTRY)}) nor an existing file")
        if split is not None:
            raise ValueError(f"split {split!r} applies to registered datasets only; the file {name} is one split")
    elif split is not None and split not in spec.splits:
        raise DatasetNotFoundError(f"dataset '{name}' has no split '{split}'; available: {', '.join(spec.splits)}")
    return spec


def named_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local data folder in force (absolute), or None for the hub: `data_dir` (``data_dir=``,
    a command's ``--data-dir``) when given, else ``$KAVA_DATA_DIR`` when set and not empty.

    There is no default folder: with neither, registered datasets come from their hub ids.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env).expanduser().resolve() if env else None


def _named_by(data_dir: str | Path | None) -> str:
    return "data_dir= / --data-dir" if data_dir is not None and str(data_dir) != "" else f"${ENV_DATA_DIR}"


# --------------------------------------------------------------------------- loading

def load_dataset(
    name_or_path: str | Path,
    split: str | None = None,
    *,
    data_dir: str | Path | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> LoadedDataset:
    """Load a registered dataset split, or a file, as records.

    `name_or_path`: a name from `dataset_names()` or a path to a ``.txt`` (iCoT), ``.jsonl`` or
    ``.json`` file, whose format is detected from the extension and the row keys. `split`
    defaults to the name's evaluation split (``test``; ``train`` for the derived sets) and must
    be None for a file. `data_dir` is the folder a registered name is read from (else
    ``$KAVA_DATA_DIR``, else the hub: `named_data_dir`); a named folder that lacks the file raises
    `DatasetNotFoundError`, it never falls through to the hub. `skip_bad` skips malformed rows
    (counted in ``skipped``) instead of raising `DatasetFormatError`. `limit` keeps the first
    `limit` records and stops reading there.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    key = str(name_or_path)
    spec = dataset_entry(key, split)
    if spec is not None:
        return _load_registered(spec, split, data_dir=data_dir, skip_bad=skip_bad, limit=limit)
    return _load_file(Path(key).expanduser(), key, None, skip_bad=skip_bad, limit=limit)


def _load_file(
    path: Path,
    name: str,
    split: str | None,
    fmt: str | None = None,
    *,
    skip_bad: bool,
    limit: int | None,
    derive: str | None = None,
) -> LoadedDataset:
    detected, rows = _read_rows(path)
    records, reasons, left_out = _collect(rows, fmt or detected, str(path), skip_bad=skip_bad, limit=limit,
                                          **_transform(derive))
    return LoadedDataset(name=name, split=split, source=str(path), records=records, skip_reasons=reasons,
                         left_out=left_out)


def _transform(derive: str | None) -> dict[str, Any]:
    if derive is None:
        return {}
    if derive == "aug":
        return {"transform": to_aug, "transform_reason": "no <<…>> annotation in the solution, which an equation-only CoT needs"}
    return {"transform": to_aug_nl, "transform_reason": "no solution lines"}


def _load_registered(
    spec: DatasetSpec, split: str | None, *, data_dir: str | Path | None, skip_bad: bool, limit: int | None
) -> LoadedDataset:
    split = spec.default_split if split is None else split
    split_spec = spec.splits[split]
    if split_spec.fmt == _PROSQA_GENERATED:
        return _generate_prosqa(spec, split, named_data_dir(data_dir), _named_by(data_dir), skip_bad=skip_bad,
                                limit=limit)
    folder = named_data_dir(data_dir)
    if split_spec.generate:
        return _generate_split(spec, split, split_spec, folder, _named_by(data_dir), limit)
    if split_spec.held_back and (folder is None or not (folder / split_spec.local).is_file()):
        where = f"the data folder {folder} has no {split_spec.local}" if folder else "no data folder is named"
        raise DatasetNotFoundError(
            f"dataset '{spec.name}' split '{split}' is held back: it is not among the public files ({where}) and no "
            f"other split stands in for it; use another split ({', '.join(s for s in spec.splits if s != split)}) "
            f"or put the file at {split_spec.local} in the data folder")
    if folder is None:
        return _load_hub(spec, split, split_spec, skip_bad=skip_bad, limit=limit)
    path = folder / split_spec.local
    if not path.is_file():
        raise DatasetNotFoundError(_not_in_folder(spec, split, split_spec, folder, _named_by(data_dir)))
    return _load_file(path, spec.name, split, split_spec.fmt, skip_bad=skip_bad, limit=limit, derive=spec.derive)


def _generate_split(spec: DatasetSpec, split: str, split_spec: SplitSpec, folder: Path | None, named_by: str,
                    limit: int | None) -> LoadedDataset:
    """A generated multiplication split (`kava.data.multiplication.generate_problems`, seed 0):
    the first `limit` (else `MULT_TRAIN_SIZE`) problems of the seeded stream that are not a
    problem of the dataset's read splits in either order; those it meets are left out, listed."""
    n = split_spec.generate
    read = {name: s for name, s in spec.splits.items() if not s.generate}
    if folder is None:
        raise DatasetNotFoundError(
            f"dataset '{spec.name}' split '{split}' is generated without any problem of its {'/'.join(read)} splits, "
            f"so it needs the data folder holding them: set {ENV_DATA_DIR} (or pass --data-dir / data_dir=) to it")
    exclude: set[tuple[int, int]] = set()
    sources = []
    for name, s in read.items():
        path = folder / s.local
        if not path.is_file():
            if s.held_back:
                continue
            raise DatasetNotFoundError(
                f"dataset '{spec.name}' split '{split}' is generated without any problem of split '{name}', but the "
                f"data folder {folder} (named by {named_by}) has no {s.local}; put it there or name the folder that holds it")
        exclude.update(problem_key(r) for r in _load_file(path, spec.name, name, s.fmt, skip_bad=False, limit=None).records)
        sources.append(name)
    count = MULT_TRAIN_SIZE if limit is None else limit
    records: list[Record] = []
    left_out: list[str] = []
    for number, (a, b) in enumerate(generate_problems(n), start=1):
        if len(records) >= count:
            break
        if (min(a, b), max(a, b)) in exclude:
            left_out.append(f"generated problem {number}: same operands as a {'/'.join(sources)} problem")
            continue
        records.append(mult_record(a, b, n))
    source = f"generated {n}x{n} multiplication (seed 0) without the {spec.name} {'/'.join(sources)} problems of {folder}"
    return LoadedDataset(name=spec.name, split=split, source=source, records=records, left_out=left_out)


def _generate_prosqa(spec: DatasetSpec, split: str, folder: Path | None, named_by: str, *, skip_bad: bool,
                     limit: int | None) -> LoadedDataset:
    """A generated ProsQA split (`kava.data.prosqa.generate_rows`, seed 0): the first `limit` (else
    `PROSQA_TRAIN_SIZE`) problems of the seeded stream, none equal to a problem of the read splits."""
    read = {name: s for name, s in spec.splits.items() if s.fmt != _PROSQA_GENERATED}
    if folder is None:
        raise DatasetNotFoundError(
            f"dataset '{spec.name}' split '{split}' is generated without any problem of its {'/'.join(read)} splits, "
            f"so it needs the data folder holding them: set {ENV_DATA_DIR} (or pass --data-dir / data_dir=) to it")
    public: list[dict[str, str]] = []
    for name, s in read.items():
        path = folder / s.local
        if not path.is_file():
            raise DatasetNotFoundError(
                f"dataset '{spec.name}' split '{split}' is generated without any problem of split '{name}', but the "
                f"data folder {folder} (named by {named_by}) has no {s.local}; put it there or name the folder that holds it")
        public.extend({"question": r.question}
                      for r in _load_file(path, spec.name, name, s.fmt, skip_bad=False, limit=None).records)
    count = PROSQA_TRAIN_SIZE if limit is None else limit
    source = f"generated ProsQA (seed 0) without the {spec.name} {'/'.join(read)} problems of {folder}"
    rows = ((f"{source}: problem {i}", row, None)
            for i, row in enumerate(generate_rows(count, seed=0, exclude=public), start=1))
    records, reasons, _ = _collect(rows, "prosqa", source, skip_bad=skip_bad, limit=limit)
    return LoadedDataset(name=spec.name, split=split, source=source, records=records, skip_reasons=reasons)


def _offline_hint(spec: DatasetSpec, split: str) -> str:
    if spec.name == "gsm8k-aug" and split == "train":
        return "; for a small offline training set use 'gsm8k-train-aug' (derived from gsm8k/train.jsonl, not GSM8k-AUG)"
    if spec.name == "gsm8k-aug-nl" and split == "train":
        return "; for a small offline training set use 'gsm8k-train-aug-nl' (derived from gsm8k/train.jsonl, not GSM8k-AUG-NL)"
    return ""


def _not_in_folder(spec: DatasetSpec, split: str, split_spec: SplitSpec, folder: Path, named_by: str) -> str:
    """A named folder without the file: name both, and every way on; never a silent fall-through."""
    state = "does not exist" if not folder.exists() else f"has no {split_spec.local}"
    fixes = f"put {split_spec.local} into {folder}, or name the folder that holds it ({named_by})"
    hubs = ", ".join(h.repo for h in split_spec.hub)
    if hubs:
        fixes += (f", or name no folder (unset {ENV_DATA_DIR}, no --data-dir / data_dir=) to load it from the hub "
                  f"({hubs}; needs `pip install datasets` and hub access)")
    return (f"dataset '{spec.name}' split '{split}': the data folder {folder} (named by {named_by}) {state} "
            f"(looked for {folder / split_spec.local}). To fix: {fixes}{_offline_hint(spec, split)}")


def _no_source(spec: DatasetSpec, split: str, split_spec: SplitSpec, why: str) -> str:
    """No folder named and the hub cannot help: say how to point at local files."""
    hubs = ", ".join(h.repo for h in split_spec.hub)
    fixes = (f"set {ENV_DATA_DIR} (or pass --data-dir / data_dir=) to a folder holding {split_spec.local}, "
             "or pass the file's path")
    if hubs:
        fixes += f", or reach the hub ({hubs}; needs `pip install datasets` and network access)"
    return (f"dataset '{spec.name}' split '{split}': no data folder named ({ENV_DATA_DIR} unset, no --data-dir / "
            f"data_dir=), so the hub was the source, and {why}. To fix: {fixes}{_offline_hint(spec, split)}")


def _load_hub(
    spec: DatasetSpec, split: str, split_spec: SplitSpec, *, skip_bad: bool, limit: int | None
) -> LoadedDataset:
    if not split_spec.hub:
        raise DatasetNotFoundError(_no_source(spec, split, split_spec, "it has no hub source"))
    try:
        import datasets as hf_datasets
    except ImportError as exc:
        raise DatasetNotFoundError(
            _no_source(spec, split, split_spec, "the hub is unavailable: the `datasets` package is not installed")
        ) from exc

    failures: list[str] = []
    last_exc: Exception | None = None
    for hub in split_spec.hub:
        try:
            parts = [hf_datasets.load_dataset(hub.repo, hub.config, split=s) for s in hub.splits]
        except Exception as exc:  # network, auth or missing-split errors: try the next copy, report all
            failures.append(f"{hub.repo}: {type(exc).__name__}: {' '.join(str(exc).split())}")
            last_exc = exc
            continue
        source = f"hub:{hub.repo}" + (f"/{hub.config}" if hub.config else "") + f"[{'+'.join(hub.splits)}]"
        rows = (
            (f"{hub.repo}[{s}] row {i}", row, None)
            for s, part in zip(hub.splits, parts)
            for i, row in enumerate(part, start=1)
        )
        records, reasons, left_out = _collect(rows, hub.fmt, source, skip_bad=skip_bad, limit=limit,
                                              **_transform(spec.derive))
        return LoadedDataset(name=spec.name, split=split, source=source, records=records, skip_reasons=reasons,
                             left_out=left_out)
    raise DatasetNotFoundError(
        _no_source(spec, split, split_spec, "the hub load failed (" + "; ".join(failures) + ")")
    ) from last_exc
