"""The dataset registry on the real files (the folder conftest names in KAVA_DATA_DIR: ../shared/data
unless set), where data is looked for, malformed input, and the converter."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from kava.data.answers import parse_gold
from kava.data.convert import convert_gsm8k, gsm8k_record, to_aug, write_jsonl
from kava.data.datasets import (
    DatasetFormatError,
    DatasetNotFoundError,
    dataset_names,
    load_dataset,
    named_data_dir,
)
from kava.data.records import Record

from conftest import DATA_DIR

REPO = Path(__file__).resolve().parents[1]
DATA = DATA_DIR  # read through the environment (conftest), passed below as data_dir=

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA} (KAVA_DATA_DIR)")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inside a test, KAVA_DATA_DIR is unset: each test names the folder it means (data_dir= or setenv).
    monkeypatch.delenv("KAVA_DATA_DIR", raising=False)


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import datasets` fail, as on a machine without the optional package."""
    monkeypatch.setitem(sys.modules, "datasets", None)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- real files

# (name, split, rows, file). The PAL MAWPS files end without a newline, so `wc -l` reports one
# row fewer than they hold (394/599/507); the real counts are 395/600/508.
REAL = [
    ("gsm8k", "test", 1319, "gsm8k/test.jsonl"),
    ("gsm8k", "train", 7473, "gsm8k/train.jsonl"),
    ("gsm8k-aug", "valid", 500, "gsm8k-aug/valid.txt"),
    ("gsm8k-aug", "test", 1319, "gsm8k-aug/test.txt"),
    ("svamp", "test", 1000, "svamp/SVAMP.json"),
    ("gsm8k-hard", "test", 1319, "gsm-hard/gsmhardv2.jsonl"),
    ("addsub", "test", 395, "pal/mawpsaddsub.jsonl"),
    ("multiarith", "test", 600, "pal/mawpsmultiarith.jsonl"),
    ("singleeq", "test", 508, "pal/mawpssingleeq.jsonl"),
]


def _raw_golds(file: str) -> list[float]:
    """Gold answers read straight from the file, independently of the loader."""
    path = DATA / file
    if file.endswith(".txt"):
        return [parse_gold(line.rpartition("####")[2]) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if file.endswith(".json"):
        return [float(row["Answer"]) for row in json.loads(path.read_text(encoding="utf-8"))]
    rows = _jsonl(path)
    if "target" in rows[0]:
        return [float(row["target"]) for row in rows]
    return [parse_gold(row["answer"].rpartition("####")[2]) for row in rows]


@needs_data
@pytest.mark.parametrize(("name", "split", "rows", "file"), REAL, ids=[f"{r[0]}-{r[1]}" for r in REAL])
def test_real_file_loads_with_exact_count_and_gold(name: str, split: str, rows: int, file: str) -> None:
    ds = load_dataset(name, split, data_dir=DATA)
    assert (len(ds), ds.skipped, ds.name, ds.split) == (rows, 0, name, split)
    assert Path(ds.source) == DATA / file
    golds = _raw_golds(file)
    assert len(golds) == rows
    for record, gold in zip(ds.records, golds):
        assert parse_gold(record.answer) == gold
        assert record.question.strip() == record.question and record.question


@needs_data
def test_formats_are_read_as_documented() -> None:
    aug = load_dataset("gsm8k-aug", "test", data_dir=DATA)
    assert aug[0].steps == ("<<16-3-4=9>>", "<<9*2=18>>") and aug[0].answer == "18"
    assert sum(1 for r in aug if not r.steps) == 18  # iCoT keeps 18 rows with an empty CoT
    gsm = load_dataset("gsm8k", "test", data_dir=DATA)
    assert gsm[0].steps[0] == "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day." and len(gsm[0].steps) == 2
    assert any(r.answer == "2125" for r in gsm)  # "#### 2,125" stored without separator
    svamp = load_dataset("svamp", data_dir=DATA)
    assert svamp[0].question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    hard = load_dataset("gsm8k-hard", data_dir=DATA)
    assert hard[0].answer == "-9867630" and hard.split == "test"


def _gsm8k_folder(folder: Path, question: str) -> Path:
    (folder / "gsm8k").mkdir(parents=True)
    (folder / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": question, "answer": "a <<1+1=2>>2\n#### 2"}) + "\n")
    return folder


@needs_data
def test_without_a_named_folder_the_hub_is_tried_never_a_built_in_path(monkeypatch: pytest.MonkeyPatch, no_hub) -> None:
    # Run from the repository root, where ../shared/data exists: it is still not read.
    monkeypatch.chdir(REPO)
    assert named_data_dir() is None
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("gsm8k", "test")
    message = str(info.value)
    assert "no data folder named" in message and "the `datasets` package is not installed" in message
    assert "KAVA_DATA_DIR" in message and "--data-dir" in message and "gsm8k/test.jsonl" in message
    assert "shared" not in message and "\n" not in message


def test_order_flag_then_env_then_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_hub(monkeypatch, {("openai/gsm8k", "test"): [{"question": "hub?", "answer": "b <<2+2=4>>4\n#### 4"}]})
    env, flag = _gsm8k_folder(tmp_path / "env", "env?"), _gsm8k_folder(tmp_path / "flag", "flag?")
    assert load_dataset("gsm8k").records[0].question == "hub?" and calls == [("openai/gsm8k", "main", "test")]
    monkeypatch.setenv("KAVA_DATA_DIR", str(env))
    assert named_data_dir() == env
    assert load_dataset("gsm8k").records == [Record("env?", ("a <<1+1=2>>2",), "2")]
    assert named_data_dir(flag) == flag
    assert load_dataset("gsm8k", data_dir=flag).source == str(flag / "gsm8k" / "test.jsonl")
    assert len(calls) == 1  # a named folder that holds the file: the hub is not asked
    monkeypatch.setenv("KAVA_DATA_DIR", "")  # empty: as if unset
    assert named_data_dir() is None and load_dataset("gsm8k").source == "hub:openai/gsm8k/main[test]"


def test_a_named_folder_without_the_file_is_an_error_not_a_fall_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The hub would answer, and the env folder holds the file: neither is used for a folder that lacks it.
    calls = _fake_hub(monkeypatch, {("openai/gsm8k", "train"): [{"question": "hub?", "answer": "b\n#### 4"}]})
    env = _gsm8k_folder(tmp_path / "env", "env?")
    (env / "gsm8k" / "train.jsonl").write_text((env / "gsm8k" / "test.jsonl").read_text())
    monkeypatch.setenv("KAVA_DATA_DIR", str(env))
    flag = _gsm8k_folder(tmp_path / "flag", "flag?")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("gsm8k", "train", data_dir=flag)  # in $KAVA_DATA_DIR and on the hub, not in the named folder
    message = str(info.value)
    assert f"the data folder {flag} (named by data_dir= / --data-dir) has no gsm8k/train.jsonl" in message
    assert str(flag / "gsm8k" / "train.jsonl") in message and "openai/gsm8k" in message and "\n" not in message
    monkeypatch.setenv("KAVA_DATA_DIR", str(flag))
    with pytest.raises(DatasetNotFoundError, match=r"data folder .*flag \(named by \$KAVA_DATA_DIR\) has no gsm8k/train"):
        load_dataset("gsm8k", "train")
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match=f"the data folder {missing} .* does not exist"):
        load_dataset("gsm8k", "train", data_dir=missing)
    assert calls == []


@needs_data
def test_limit_stops_early() -> None:
    ds = load_dataset("gsm8k", "train", data_dir=DATA, limit=5)
    assert ds.records == load_dataset("gsm8k", "train", data_dir=DATA).records[:5]
    assert len(load_dataset("svamp", data_dir=DATA, limit=0)) == 0
    with pytest.raises(ValueError, match="limit"):
        load_dataset("svamp", data_dir=DATA, limit=-1)


# --------------------------------------------------------------------------- converter

@needs_data
def test_converter_reproduces_icot_gsm8k_aug() -> None:
    """Applied to GSM8K test, the AUG conversion gives iCoT's test.txt, row for row."""
    converted = [to_aug(gsm8k_record(row)) for row in _jsonl(DATA / "gsm8k" / "test.jsonl")]
    icot = load_dataset("gsm8k-aug", "test", data_dir=DATA).records
    assert len(converted) == len(icot)
    for mine, theirs in zip(converted, icot):
        if mine is None:
            assert theirs.steps == ()  # iCoT keeps unannotated rows with an empty CoT; we skip them
        else:
            assert mine == theirs


@needs_data
def test_converter_on_real_train_round_trips(tmp_path: Path) -> None:
    rows = _jsonl(DATA / "gsm8k" / "train.jsonl")
    aug = convert_gsm8k(rows, "aug")
    assert (len(aug.records), aug.skipped) == (7378, 95)
    assert aug.records[0] == Record(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        ("<<48/2=24>>", "<<48+24=72>>"),
        "72",
    )
    assert all(r.validate(need_steps=True) for r in aug.records)
    nl = convert_gsm8k(rows, "aug-nl")
    assert (len(nl.records), nl.skipped) == (7473, 0)
    assert nl.records[0].steps == (
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
    )
    assert not any("<<" in s for r in nl.records for s in r.steps)
    for conversion, registry_name in ((aug, "gsm8k-train-aug"), (nl, "gsm8k-train-aug-nl")):
        path = tmp_path / f"{registry_name}.jsonl"
        assert write_jsonl(conversion.records, path) == len(conversion.records)
        back = load_dataset(path)
        assert back.records == conversion.records and back.skipped == 0
        registered = load_dataset(registry_name, data_dir=DATA)
        assert registered.records == conversion.records and registered.skipped == conversion.skipped
        assert registered.split == "train"


def test_convert_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match=r"row 2: .*exactly one '#### N'"):
        convert_gsm8k([{"question": "q", "answer": "<<1+1=2>>\n#### 2"}, {"question": "q", "answer": "2"}], "aug")
    with pytest.raises(ValueError, match="style"):
        convert_gsm8k([], "nl")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- malformed input

GOOD_GSM8K = json.dumps({"question": "How many?", "answer": "1+1 = <<1+1=2>>2\n#### 2"})


@pytest.mark.parametrize(
    ("filename", "lines", "bad_line", "message"),
    [
        ("bad.jsonl", [GOOD_GSM8K, '{"question": "x", "answer": ', GOOD_GSM8K], 2, "invalid JSON"),
        ("bad.jsonl", [GOOD_GSM8K, GOOD_GSM8K, json.dumps({"question": "How many?"})], 3, "missing field 'answer'"),
        ("bad.jsonl", [json.dumps({"input": "How many?", "target": 3}), json.dumps({"input": "How?", "target": "lots"})], 2, "not a number"),
        ("bad.jsonl", [json.dumps({"question": "  ", "steps": ["<<1+1=2>>"], "answer": "2"})], 1, "'question' is empty"),
        ("bad.jsonl", [GOOD_GSM8K, json.dumps({"question": "q", "answer": "no final line"})], 2, "#### N"),
        ("bad.txt", ["q||<<1+1=2>> #### 2", "q <<1+1=2>> #### 2"], 2, "no '\\|\\|'"),
        ("bad.txt", ["q||<<1+1=2>> #### 2", "", "q||<<1+1=2>> #### two"], 3, "not a number"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, filename: str, lines: list[str], bad_line: int, message: str) -> None:
    path = tmp_path / filename
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}:{bad_line}:")
    ds = load_dataset(path, skip_bad=True)
    assert ds.skipped == 1 and len(ds) == len([line for line in lines if line.strip()]) - 1
    assert ds.skip_reasons[0].startswith(f"{path}:{bad_line}:")


def test_malformed_json_list_names_item(tmp_path: Path) -> None:
    path = tmp_path / "svamp.json"
    good = {"Body": "Dan had 4.", "Question": "How many?", "Answer": 4.0}
    path.write_text(json.dumps([good, {"Body": "x", "Question": "y", "Answer": "?"}, good]))
    with pytest.raises(DatasetFormatError, match=r"svamp\.json item 2: field 'Answer'"):
        load_dataset(path)
    assert load_dataset(path, skip_bad=True).skipped == 1
    path.write_text('[{"Body": "x",\n "Question": }]')
    with pytest.raises(DatasetFormatError, match=r"svamp\.json:2: invalid JSON"):
        load_dataset(path)


def test_plain_jsonl_with_steps_or_codi_cot(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    rows = [
        {"question": "A?", "steps": ["<<2*3=6>>", "<<6+1=7>>"], "answer": "7"},
        {"question": "B?", "cot": "<<2*3=6>> <<6+1=7>>", "answer": "1,007"},
        {"question": "C?", "cot": "Two times three is six.", "answer": 6},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(path)
    assert [r.steps for r in ds] == [("<<2*3=6>>", "<<6+1=7>>"), ("<<2*3=6>>", "<<6+1=7>>"), ("Two times three is six.",)]
    assert [r.answer for r in ds] == ["7", "1007", "6"]
    hf_json = tmp_path / "hf.json"  # Dataset.to_json writes JSON lines into .json files
    hf_json.write_text(path.read_text())
    assert load_dataset(hf_json).records == ds.records


def test_unrecognised_rows_and_file_types(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"prompt": "x", "label": 1}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"odd\.jsonl:1: unrecognised row"):
        load_dataset(path)
    csv = tmp_path / "data.csv"
    csv.write_text("question,answer\n")
    with pytest.raises(DatasetFormatError, match="unsupported file type"):
        load_dataset(csv)
    with pytest.raises(ValueError, match="one split"):
        load_dataset(path, "test")


# --------------------------------------------------------------------------- missing data, hub

def test_missing_dataset_says_what_was_looked_for(tmp_path: Path, no_hub) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("gsm8k", "test", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "gsm8k" / "test.jsonl") in message and "openai/gsm8k" in message and "\n" not in message
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("gsm8k", "test")  # no folder named: the hub, which is not installed
    message = str(info.value)
    assert "KAVA_DATA_DIR" in message and "pip install datasets" in message and "openai/gsm8k" in message
    assert "\n" not in message
    with pytest.raises(DatasetNotFoundError, match="no hub source.*KAVA_DATA_DIR"):
        load_dataset("multiarith")
    with pytest.raises(DatasetNotFoundError, match=r"has no pal/mawpsmultiarith\.jsonl"):
        load_dataset("multiarith", data_dir=tmp_path)


@needs_data
def test_no_substitution_between_datasets(tmp_path: Path, no_hub) -> None:
    # A folder holding GSM8k-AUG (iCoT) files must not satisfy a request for GSM8k-AUG-NL ...
    shutil.copytree(DATA / "gsm8k-aug", tmp_path / "gsm8k-aug")
    shutil.copytree(DATA / "gsm8k", tmp_path / "gsm8k")
    with pytest.raises(DatasetNotFoundError, match=r"gsm8k-aug-nl/test\.jsonl"):
        load_dataset("gsm8k-aug-nl", "test", data_dir=tmp_path)
    # ... and GSM8k-AUG train is not silently replaced by the GSM8K-derived set: only pointed to.
    with pytest.raises(DatasetNotFoundError, match="use 'gsm8k-train-aug'") as info:
        load_dataset("gsm8k-aug", "train", data_dir=tmp_path)
    assert "gsm8k-aug/train.txt" in str(info.value)


def test_unknown_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="neither a registered dataset"):
        load_dataset("gsm9k")
    with pytest.raises(DatasetNotFoundError, match="neither a registered dataset"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetNotFoundError, match="no split 'train'; available: test"):
        load_dataset("svamp", "train", data_dir=tmp_path)
    assert set(dataset_names()) == {
        "gsm8k-aug", "gsm8k-aug-nl", "gsm8k", "gsm8k-train-aug", "gsm8k-train-aug-nl",
        "gsm8k-hard", "svamp", "math500", "aqua", "prosqa", "mult4", "mult5", "multiarith", "addsub", "singleeq",
    }


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tables: dict[tuple[str, str], list[dict]]) -> list[tuple]:
    calls: list[tuple] = []

    def load(repo: str, config: str | None = None, *, split: str):
        calls.append((repo, config, split))
        if (repo, split) not in tables:
            raise ConnectionError(f"cannot reach {repo}")
        return tables[(repo, split)]

    module = types.ModuleType("datasets")
    module.load_dataset = load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_used_only_when_no_folder_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    row = {"Body": "Dan had 4 apples.", "Question": "How many?", "Answer": 4.0}
    calls = _fake_hub(monkeypatch, {("ChilleD/SVAMP", "train"): [row, row], ("ChilleD/SVAMP", "test"): [row]})
    ds = load_dataset("svamp")
    assert len(ds) == 3 and ds.source == "hub:ChilleD/SVAMP[train+test]" and ds[0].answer == "4"
    assert calls == [("ChilleD/SVAMP", None, "train"), ("ChilleD/SVAMP", None, "test")]
    with pytest.raises(DatasetNotFoundError, match="svamp/SVAMP.json"):
        load_dataset("svamp", data_dir=tmp_path)
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "SVAMP.json").write_text(json.dumps([row]))
    assert load_dataset("svamp", data_dir=tmp_path).source == str(tmp_path / "svamp" / "SVAMP.json")
    assert len(calls) == 2


def test_hub_rows_are_checked_and_failures_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_hub(monkeypatch, {("zen-E/GSM8k-Aug", "train"): [
        {"question": "A?", "cot": "<<1+1=2>> <<2*2=4>>", "answer": "4"},
        {"question": "B?", "cot": "<<1+1=2>>", "answer": "n/a"},
    ]})
    with pytest.raises(DatasetFormatError, match=r"zen-E/GSM8k-Aug\[train\] row 2: field 'answer'"):
        load_dataset("gsm8k-aug", "train")
    ds = load_dataset("gsm8k-aug", "train", skip_bad=True)
    assert ds.records == [Record("A?", ("<<1+1=2>>", "<<2*2=4>>"), "4")] and ds.skipped == 1
    _fake_hub(monkeypatch, {})
    with pytest.raises(DatasetNotFoundError, match="hub load failed") as info:
        load_dataset("gsm8k-aug-nl", "train")
    assert "whynlp/gsm8k-aug-nl: ConnectionError" in str(info.value) and "zen-E/GSM8k-Aug-NL" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_line_separator_inside_a_string_is_not_a_new_row(tmp_path: Path) -> None:
    # GSM8K train has U+2028 inside questions; JSON written with ensure_ascii=False keeps it raw.
    record = Record("Balls.\u2028How many?", ("<<1+1=2>>",), "2")
    path = tmp_path / "ls.jsonl"
    write_jsonl([record], path)
    assert "\u2028" in path.read_text(encoding="utf-8")
    assert load_dataset(path).records == [record]


@pytest.mark.parametrize(("filename", "text"), [("e.jsonl", ""), ("b.jsonl", "\n  \n"), ("e.txt", "\n"), ("e.json", "[]")])
def test_an_empty_or_blank_file_is_an_error(tmp_path: Path, filename: str, text: str) -> None:
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=f"{path}: no rows"):
        load_dataset(path, skip_bad=True)


def test_skip_notice_tells_malformed_rows_from_unconvertible_ones(tmp_path: Path) -> None:
    plain = json.dumps({"question": "How many?", "answer": "It is 2.\n#### 2"})  # valid, no <<…>> annotation
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("\n".join([GOOD_GSM8K, plain, "{broken"]) + "\n")
    ds = load_dataset("gsm8k-train-aug", data_dir=tmp_path, skip_bad=True)
    assert (len(ds), ds.skipped, len(ds.left_out)) == (1, 2, 1)
    notice = ds.skip_notice()
    assert notice.startswith("skipped 1 malformed row(s) and left out 1 well-formed row(s) (no <<…>> annotation")
    assert load_dataset("gsm8k-train-aug-nl", data_dir=tmp_path, limit=2).skip_notice() is None
