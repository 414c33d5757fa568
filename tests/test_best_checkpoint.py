"""best/: the model of the best validation evaluation (`kava.training.best`), its ties, its card,
and a resume that keeps the best so far. The evaluation's scores are scripted by step, so which
step best/ must hold is known before the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from kava.config import ConfigError
from kava.training.best import SELECTION_FILE, read_selection
from kava.training.engine import train
from kava.training.run_config import load_run_config

from conftest import TRAIN_RECORDS as RECORDS, train_config as config, training_model as build

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = "adapter_model.safetensors"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def scripted(scores: dict[int, float]):
    """An eval_fn whose accuracy at each step is ``scores[step]`` (the step is read from the
    number of calls so far, offset by where a resumed run starts)."""
    calls = {"n": 0}

    def eval_fn(model):
        calls["n"] += 1
        return {"accuracy": scores[calls["start"] + calls["n"]]}

    calls["start"] = 0
    eval_fn.calls = calls
    return eval_fn


def tensors(folder: Path) -> dict:
    return load_file(folder / WEIGHTS)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_best_is_the_highest_score_and_a_tie_keeps_the_earlier(tmp_path):
    scores = {1: 0.2, 2: 0.5, 3: 0.5, 4: 0.3, 5: 0.4}  # the best at step 2; step 3 ties it
    result = train(build(), RECORDS, config(max_steps=5, eval_every=1, save_every=1, keep_last=5),
                   output_dir=tmp_path, eval_fn=scripted(scores), keep_best=True, eval_data="valid, 3 questions")
    sel = read_selection(tmp_path)
    assert (sel.step, sel.value, sel.eval_every) == (2, 0.5, 1)
    assert same(tensors(tmp_path / "best"), tensors(tmp_path / "checkpoints" / "ckpt-2" / "model"))
    assert not same(tensors(tmp_path / "best"), tensors(tmp_path / "checkpoints" / "ckpt-3" / "model"))
    assert same(tensors(result.final_dir), tensors(tmp_path / "checkpoints" / "ckpt-5" / "model"))
    best_card = (tmp_path / "best" / "README.md").read_text()
    assert "best/: the best validation accuracy (50.0 % on valid, 3 questions) at step 2 of 5" in best_card
    final_card = (result.final_dir / "README.md").read_text()
    assert "final/: the last step (5); best/ holds the best validation accuracy (50.0 %" in final_card
    assert not list(tmp_path.glob("*.tmp"))


def test_without_keep_best_there_is_no_best_folder_and_the_card_says_final(tmp_path):
    result = train(build(), RECORDS, config(max_steps=2, eval_every=1), output_dir=tmp_path,
                   eval_fn=scripted({1: 0.1, 2: 0.2}))
    assert not (tmp_path / "best").exists()
    assert "- model: final/: the last step (2)" in (result.final_dir / "README.md").read_text()


@pytest.mark.parametrize("later,expected", [({4: 0.3, 5: 0.4}, 2), ({4: 0.3, 5: 0.6}, 5)])
def test_resume_keeps_the_best_so_far(tmp_path, later, expected):
    scores = {1: 0.2, 2: 0.5, 3: 0.1, **later}
    first = train(build(), RECORDS, config(max_steps=5, eval_every=1, save_every=1, keep_last=5),
                  output_dir=tmp_path, eval_fn=scripted(scores), keep_best=True, stop_after=3)
    assert first.interrupted and read_selection(tmp_path).step == 2
    resumed_eval = scripted(scores)
    resumed_eval.calls["start"] = 3
    train(build(), RECORDS, config(max_steps=5, eval_every=1, save_every=1, keep_last=5),
          output_dir=tmp_path, eval_fn=resumed_eval, keep_best=True, resume=True)
    assert read_selection(tmp_path).step == expected
    assert same(tensors(tmp_path / "best"), tensors(tmp_path / "checkpoints" / f"ckpt-{expected}" / "model"))


def test_a_damaged_selection_record_is_named_on_resume(tmp_path):
    train(build(), RECORDS, config(max_steps=3, eval_every=1), output_dir=tmp_path,
          eval_fn=scripted({1: 0.2, 2: 0.5, 3: 0.1}), keep_best=True, stop_after=2)
    (tmp_path / "best" / SELECTION_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=f"best/{SELECTION_FILE}: not a best-model selection record"):
        train(build(), RECORDS, config(max_steps=3, eval_every=1), output_dir=tmp_path,
              eval_fn=scripted({3: 0.1}), keep_best=True, resume=True)


def test_keep_best_needs_an_evaluation(tmp_path):
    with pytest.raises(ValueError, match="keep_best needs an eval_fn"):
        train(build(), RECORDS, config(max_steps=2), output_dir=tmp_path, keep_best=True)
    with pytest.raises(ValueError, match="without 'accuracy'"):
        train(build(), RECORDS, config(max_steps=2, eval_every=1), output_dir=tmp_path / "b",
              eval_fn=lambda model: {"score": 1.0}, keep_best=True)


def test_config_keep_best_needs_eval_every():
    over = ["eval={name: gsm8k-aug, split: valid, limit: 3, keep_best: true}"]
    with pytest.raises(ConfigError, match="eval.keep_best: needs train.eval_every"):
        load_run_config(CONFIGS / "tiny-cpu.yaml", over)
    cfg = load_run_config(CONFIGS / "tiny-cpu.yaml", [*over, "train.eval_every=2"])
    assert cfg.eval.keep_best and json.dumps(cfg.to_dict())  # the run's saved config carries it


def test_kava_train_keeps_best_from_the_config(tmp_path):
    from conftest import make_tokenizer
    from kava.training import from_config

    tok_dir, data_file = tmp_path / "tokenizer", tmp_path / "train.jsonl"
    make_tokenizer().save_pretrained(tok_dir)
    data_file.write_text("".join(json.dumps({"question": r.question, "steps": list(r.steps), "answer": r.answer}) + "\n"
                                 for r in RECORDS))
    cfg = load_run_config(CONFIGS / "tiny-cpu.yaml", [
        f"output_dir={tmp_path / 'run'}", f"model.tokenizer={tok_dir}", f"data.name={data_file}", "data.limit=null",
        "train.max_steps=2", "train.eval_every=1", "train.report_to=[]",
        f"eval={{name: {data_file}, limit: 2, max_new_tokens: 4, keep_best: true}}"])
    from_config.train_from_config(cfg, progress=False)
    sel = read_selection(tmp_path / "run")
    assert sel.step in (1, 2) and sel.data == "train.jsonl, the first 2 questions"
    assert "best/: the best validation accuracy" in (tmp_path / "run" / "best" / "README.md").read_text()
