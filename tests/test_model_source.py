"""ModelSource: every kind round-trips through base_model.json, old records still read, and a
relative folder is taken relative to the model folder it was read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kava.config import ConfigError
from kava.model.loading import BASE_FILE, ModelSource


def _sources(tmp_path: Path) -> list[ModelSource]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "m.gguf").write_bytes(b"")
    return [
        ModelSource("smollm2"),
        ModelSource.parse(str(tmp_path / "m.gguf")),
        ModelSource.parse(str(tmp_path / "folder")),
        ModelSource.parse("meta-llama/Llama-3.2-1B-Instruct"),
        ModelSource("config", config={"model_type": "llama", "hidden_size": 8}, seed=3, tokenizer="smollm2"),
    ]


def test_each_kind_round_trips_through_json(tmp_path):
    sources = _sources(tmp_path)
    assert [s.kind for s in sources] == ["smollm2", "gguf", "local", "hub", "config"]
    for source in sources:
        record = json.loads(json.dumps(source.to_json()))
        assert ModelSource.from_json(record) == source
        assert None not in record.values()  # unset fields are left out, as earlier versions wrote


def test_parse_records_absolute_paths_and_refuses_what_is_not_there(tmp_path):
    gguf = _sources(tmp_path)[1]
    assert gguf.to_json() == {"kind": "gguf", "path": str(tmp_path.resolve()), "gguf_file": "m.gguf"}
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        ModelSource.parse("./no/such/model")
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        ModelSource.parse("missing.gguf")
    with pytest.raises(ValueError, match="neither smollm2"):
        ModelSource.parse("not a model!")


@pytest.mark.parametrize(
    "record",
    [  # base_model.json files as earlier versions wrote them
        {"kind": "smollm2"},
        {"kind": "hub", "path": "meta-llama/Llama-3.2-1B-Instruct"},
        {"kind": "local", "path": "/models/base"},
        {"kind": "gguf", "path": "/models", "gguf_file": "m.gguf"},
        {"kind": "config", "config": {"model_type": "llama"}},
        {"kind": "config", "config": {"model_type": "llama"}, "seed": 0, "tokenizer": "smollm2"},
    ],
)
def test_old_records_read_and_write_back_unchanged(tmp_path, record):
    (tmp_path / BASE_FILE).write_text(json.dumps(record))
    assert ModelSource.read(tmp_path).to_json() == record


def test_a_relative_folder_is_relative_to_the_model_folder(tmp_path):
    model_dir = tmp_path / "exported"
    model_dir.mkdir()
    (model_dir / BASE_FILE).write_text(json.dumps({"kind": "local", "path": "."}))  # what export writes
    assert ModelSource.read(model_dir) == ModelSource("local", str(model_dir.resolve()))
    (model_dir / BASE_FILE).write_text("{}")  # a model saved without a recorded base
    assert ModelSource.read(model_dir) is None
    assert ModelSource.read(tmp_path) is None  # no file at all


@pytest.mark.parametrize(
    "record, message",
    [
        ({"kind": "zip", "path": "x"}, "base_model.kind: 'zip' is not one of smollm2, gguf, local, hub, config"),
        ({"kind": "gguf", "path": "/m"}, "base_model.gguf_file: missing"),
        ({"kind": "config", "config": {"model_type": "gpt2"}}, "base_model.config.model_type: 'gpt2' is not one of"),
        ({"kind": "hub", "path": "x", "revision": "main"}, "base_model.revision: unknown key"),
    ],
)
def test_bad_records_are_one_line(record, message):
    with pytest.raises(ConfigError, match=message):
        ModelSource.from_json(record)
