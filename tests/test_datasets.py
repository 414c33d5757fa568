"""The dataset registry on the real files in ../shared/data, malformed input, and the converter."""

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
    data_dir_candidates,
    dataset_names,
    load_dataset,
)
from kava.data.records import Record

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's KAVA_DATA_DIR must not change what these tests read.
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


@needs_data
def test_default_data_dir_is_found_from_repo_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REPO)
    assert data_dir_candidates()[0] == DATA
    assert len(load_dataset("gsm8k-aug", "valid")) == 500
    monkeypatch.chdir(tmp_path)  # elsewhere: falls back to the repository's ../shared/data
    assert DATA in data_dir_candidates()
    assert len(load_dataset("gsm8k-aug", "valid", limit=3)) == 3


def test_env_data_dir_is_the_only_folder_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_hub) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q?", "answer": "a <<1+1=2>>2\n#### 2"}) + "\n")
    monkeypatch.setenv("KAVA_DATA_DIR", str(tmp_path))
    assert data_dir_candidates() == [tmp_path]
    assert load_dataset("gsm8k").records == [Record("q?", ("a <<1+1=2>>2",), "2")]
    with pytest.raises(DatasetNotFoundError, match="gsm8k/train.jsonl"):
        load_dataset("gsm8k", "train")  # exists in ../shared/data, but the user named this folder


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
    assert str(tmp_path / "gsm8k" / "test.jsonl") in message
    assert "KAVA_DATA_DIR" in message and "pip install datasets" in message and "openai/gsm8k" in message
    assert "\n" not in message
    with pytest.raises(DatasetNotFoundError, match="no hub source"):
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
        "gsm8k-hard", "svamp", "math500", "aqua", "multiarith", "addsub", "singleeq",
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


def test_hub_used_only_when_local_file_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    row = {"Body": "Dan had 4 apples.", "Question": "How many?", "Answer": 4.0}
    calls = _fake_hub(monkeypatch, {("ChilleD/SVAMP", "train"): [row, row], ("ChilleD/SVAMP", "test"): [row]})
    ds = load_dataset("svamp", data_dir=tmp_path)
    assert len(ds) == 3 and ds.source == "hub:ChilleD/SVAMP[train+test]" and ds[0].answer == "4"
    assert calls == [("ChilleD/SVAMP", None, "train"), ("ChilleD/SVAMP", None, "test")]
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
        load_dataset("gsm8k-aug", "train", data_dir=tmp_path)
    ds = load_dataset("gsm8k-aug", "train", data_dir=tmp_path, skip_bad=True)
    assert ds.records == [Record("A?", ("<<1+1=2>>", "<<2*2=4>>"), "4")] and ds.skipped == 1
    _fake_hub(monkeypatch, {})
    with pytest.raises(DatasetNotFoundError, match="hub load failed") as info:
        load_dataset("gsm8k-aug-nl", "train", data_dir=tmp_path)
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
