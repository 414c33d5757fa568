"""Evaluation harness: per-question fields, summary statistics, files, skipped rows, CLI, SmolLM2."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest

from kava.config import preset
from kava.data.datasets import load_dataset
from kava.data.records import Record
from kava.evaluation import cli
from kava.evaluation import evaluate as evaluate_module
from kava.evaluation.decoding import Generation, Sampling
from kava.evaluation.answering import answer_part
from kava.evaluation.evaluate import evaluate, wilson_interval, write_results
from kava.evaluation.resumable import EvaluationRefused, evaluate_checkpoint, summary_line
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource

from conftest import DATA_DIR, make_tokenizer, tiny_model
from conftest import decoding_model as build

FIELDS = {"index", "question", "gold", "gold_value", "prediction", "answer", "correct", "finished",
          "forward_passes", "generated_tokens", "cache_tokens", "cache_entries", "latency_s"}


def check_consistent(result, model, n: int, max_new_tokens: int) -> None:
    """Per-question fields agree with each other and with the summary."""
    preds, s = result.predictions, result.summary
    assert [p["index"] for p in preds] == list(range(n))
    for p in preds:
        assert set(p) == FIELDS
        assert 1 <= p["generated_tokens"] <= max_new_tokens
        assert p["finished"] or p["generated_tokens"] == max_new_tokens
        assert p["cache_entries"] == p["cache_tokens"] * model.n_layers * model.n_kv_heads * 2
        assert p["forward_passes"] >= p["generated_tokens"]
    assert s["n"] == n and s["correct"] == sum(p["correct"] for p in preds)
    assert s["accuracy_ci95"][0] <= s["accuracy"] <= s["accuracy_ci95"][1]
    assert s["mean_forward_passes"] == pytest.approx(sum(p["forward_passes"] for p in preds) / n)
    assert s["mean_generated_tokens"] == pytest.approx(sum(p["generated_tokens"] for p in preds) / n)
    assert s["mean_cache_tokens"] == pytest.approx(sum(p["cache_tokens"] for p in preds) / n)
    assert s["total_time_s"] == pytest.approx(sum(p["latency_s"] for p in preds))
    assert s["mean_latency_s"] == pytest.approx(s["total_time_s"] / n)
    assert s["questions_per_s"] == pytest.approx(n / s["total_time_s"]) and s["max_new_tokens"] == max_new_tokens


@pytest.mark.parametrize("name", ["kava", "cot", "nocot"])
def test_evaluate_fields_and_files(name, records, tmp_path):
    model = build(name)
    model.train()
    result = evaluate(model, records, batch_size=2, max_new_tokens=10, progress=False)
    assert model.training, "evaluate restores the caller's train/eval mode"
    check_consistent(result, model, len(records), 10)
    assert result.summary["mode"] == model.config.inference_mode and result.summary["skipped"] == 0
    # Batch size and order change nothing about a question's result (except its latency).
    alone = evaluate(model, records[::-1], batch_size=1, max_new_tokens=10, progress=False)
    strip = lambda p: {k: v for k, v in p.items() if k not in ("index", "latency_s")}
    assert [strip(p) for p in alone.predictions[::-1]] == [strip(p) for p in result.predictions]

    write_results(result, tmp_path)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.predictions
    assert json.loads((tmp_path / "summary.json").read_text()) == result.summary


def test_a_questions_latency_is_its_batchs_time_shared(records, monkeypatch):
    """Each batch takes 0.3 s on a fake clock: batches of 2 and 1 questions give latencies of
    0.15 and 0.3 s, whatever the machine's speed."""

    class FakeTime:
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            cls.now += 0.3  # called once at a batch's start and once at its end
            return cls.now

    monkeypatch.setattr(evaluate_module, "time", FakeTime)
    result = evaluate(build("kava"), records, batch_size=2, max_new_tokens=4, progress=False)
    assert sorted(p["latency_s"] for p in result.predictions) == pytest.approx([0.15, 0.15, 0.3])
    assert result.summary["total_time_s"] == pytest.approx(0.6)
    assert result.summary["questions_per_s"] == pytest.approx(3 / 0.6)


def test_summary_reports_skipped_rows(tmp_path):
    data = tmp_path / "mixed.jsonl"
    rows = [{"question": "Tom has 12 apples. How many?", "answer": "12"},
            {"question": "broken row without an answer"},
            {"question": "A baker makes 24 loaves.", "answer": "24"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_dataset(data, skip_bad=True)
    assert loaded.skipped == 1
    result = evaluate(build("nocot"), loaded, batch_size=4, max_new_tokens=4, progress=False)
    s = result.summary
    assert (s["n"], s["skipped"], s["source"]) == (2, 1, str(data))


def scripted_generate(texts: list[str]):
    """A stand-in for `generate` that "emits" the given texts, so parsing and scoring are exact."""

    def fake(model, questions, *, max_new_tokens, sampling, question_ids) -> Generation:
        tok, eos = model.builder.tok, model.builder.eos_id
        tokens = [tok(texts[i], add_special_tokens=False)["input_ids"] + [eos] for i in question_ids]
        return Generation(tokens, [True] * len(tokens), [len(t) for t in tokens], [10] * len(tokens))

    return fake


@pytest.mark.parametrize(
    "name, texts, answers, correct",
    [
        # CoT: the answer is read after the first answer prompt, never from the trace before it.
        ("cot", [" <<12+7=19>> The answer is: 5", " <<24-9=15>> so 15"], [5.0, 15.0], [True, True]),
        ("cot", [" <<5+1=6>> The answer is: 6 and 7", " 15 The answer is:"], [7.0, None], [False, False]),
        ("nocot", [" 5", " twelve"], [5.0, None], [True, False]),
    ],
)
def test_answers_are_parsed_and_scored(name, texts, answers, correct, monkeypatch):
    monkeypatch.setattr(evaluate_module, "generate", scripted_generate(texts))
    recs = [Record("Tom has 12 apples. He gets 7 more. How many?", answer="5"), Record("How many?", answer="15")]
    result = evaluate(build(name), recs, batch_size=2, max_new_tokens=32, progress=False)
    assert [p["prediction"] for p in result.predictions] == texts
    assert [p["answer"] for p in result.predictions] == answers
    assert [p["correct"] for p in result.predictions] == correct
    assert result.summary["accuracy"] == sum(correct) / 2
    assert result.summary["no_answer_fraction"] == answers.count(None) / 2


def test_answer_part():
    assert answer_part(" <<1+2=3>> The answer is: 3 The answer is: 4", "The answer is:") == " 3 The answer is: 4"
    assert answer_part(" <<1+2=3>> 3", "The answer is:") == " <<1+2=3>> 3"


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), pytest.approx(1.0))
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_evaluate_refuses_bad_input(records):
    model = build("nocot")
    with pytest.raises(ValueError, match="no records"):
        evaluate(model, [], batch_size=2, max_new_tokens=4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, records, batch_size=0, max_new_tokens=4, progress=False)


def test_sampled_evaluation_is_reproducible(records):
    model = build("cot")
    s = Sampling(temperature=1.2, top_p=0.95, seed=3)
    a = evaluate(model, records, batch_size=2, max_new_tokens=8, sampling=s, progress=False)
    b = evaluate(model, records, batch_size=3, max_new_tokens=8, sampling=s, progress=False)
    assert [p["prediction"] for p in a.predictions] == [p["prediction"] for p in b.predictions]
    assert a.summary["sampling"] == {"temperature": 1.2, "top_p": 0.95, "seed": 3}


def eval_args(**over) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = []
    for key, value in over.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


def test_cli_evaluates_a_saved_checkpoint(tmp_path, capsys):
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("nocot", finetune="full"),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    model.save_pretrained(tmp_path / "ckpt")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "Tom has 12 apples. How many?", "answer": "12"}) + "\n")
    out = tmp_path / "eval"
    args = eval_args(model=tmp_path / "ckpt", dataset=data, out=out, max_new_tokens=3, no_progress=True)
    assert cli.run(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["mode"], summary["max_new_tokens"]) == (1, "direct", 3)
    assert "accuracy" in capsys.readouterr().out


def test_cli_data_dir_is_the_only_folder_read(tmp_path, capsys):
    """``--data-dir`` beats $KAVA_DATA_DIR (conftest's ../shared/data), and a folder without the
    file is one line naming both, before the model loads."""
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("nocot", finetune="full"),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    model.save_pretrained(tmp_path / "ckpt")
    folder = tmp_path / "data"
    (folder / "gsm8k").mkdir(parents=True)
    (folder / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "Tom has 12 apples.", "answer": "x\n#### 12"}) + "\n")
    args = eval_args(model=tmp_path / "ckpt", dataset="gsm8k", split="train", data_dir=folder, out=tmp_path / "e1",
                     no_progress=True)
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("kava eval: error: ") and err.count("\n") == 1
    assert f"the data folder {folder} (named by data_dir= / --data-dir) has no gsm8k/train.jsonl" in err
    assert not (tmp_path / "e1").exists()
    args = eval_args(model=tmp_path / "ckpt", dataset="gsm8k", data_dir=folder, out=tmp_path / "e2", max_new_tokens=2,
                     no_progress=True)
    assert cli.run(args) == 0
    summary = json.loads((tmp_path / "e2" / "summary.json").read_text())
    assert summary["n"] == 1 and summary["source"] == str(folder / "gsm8k" / "test.jsonl")


def test_evaluate_checkpoint_is_kava_eval_as_a_function(tmp_path, capsys):
    """The function under ``kava eval``: it returns the summary it writes, refuses what the command
    refuses (before writing anything) with the command's message, and resumes."""
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("nocot", finetune="full"),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    model.save_pretrained(tmp_path / "ckpt")
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "Tom has 12 apples. How many?", "answer": "12"}) + "\n")
    out = tmp_path / "eval"
    summary = evaluate_checkpoint(tmp_path / "ckpt", data, out=out, max_new_tokens=3, progress=False)
    assert summary == json.loads((out / "summary.json").read_text())
    card = (tmp_path / "ckpt" / "README.md").read_text()  # the result is on the evaluated model's card
    assert f"| q.jsonl | {summary['split'] or ''} | direct | 1 | {100 * summary['accuracy']:.1f} (" in card
    assert summary_line(summary).startswith(f"{data} (direct, 1 questions): accuracy ")
    with pytest.raises(EvaluationRefused, match="already holds a complete evaluation; --resume to continue it"):
        evaluate_checkpoint(tmp_path / "ckpt", data, out=out, max_new_tokens=3, progress=False)
    with pytest.raises(EvaluationRefused, match="--top-p and --seed apply to sampling only"):
        evaluate_checkpoint(tmp_path / "ckpt", data, out=tmp_path / "none", top_p=0.9)
    assert not (tmp_path / "none").exists()
    again = evaluate_checkpoint(tmp_path / "ckpt", data, out=out, max_new_tokens=3, progress=False, resume=True)
    assert {k: v for k, v in again.items() if "_s" not in k} == {k: v for k, v in summary.items() if "_s" not in k}
    args = eval_args(model=tmp_path / "ckpt", dataset=data, out=out, max_new_tokens=3, no_progress=True)
    assert cli.run(args) == 2  # the command maps the refusal onto its status and prints the same message
    assert capsys.readouterr().err.startswith("kava eval: error: --out: ")


@pytest.mark.parametrize("over, message", [
    ({"top_p": 0.9}, "--temperature"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"batch_size": 0}, "--batch-size"),
])
def test_cli_rejects_bad_options(over, message, tmp_path, capsys):
    args = eval_args(model=tmp_path, dataset="gsm8k", no_progress=True, **over)
    assert cli.run(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name, mode, max_new", [("cot", "cot", 32), ("nocot", "direct", 12), ("kava", "latent", 12)])
def test_smollm2_end_to_end(smollm2, name, mode, max_new, tmp_path):
    """SmolLM2-135M-Instruct, untrained for this task (LoRA at init is a no-op), on GSM8k test."""
    lm, tok = copy.deepcopy(smollm2[0]), copy.deepcopy(smollm2[1])  # KavaModel adds LoRA and tokens in place
    over = {"num_latents": 6} if name == "kava" else {}
    model = KavaModel(lm, tok, preset(name, lora_r=8, lora_dropout=0.0, **over))
    data = load_dataset("gsm8k", "test", data_dir=DATA_DIR, limit=3)
    result = evaluate(model, data, batch_size=3, max_new_tokens=max_new, progress=False)
    check_consistent(result, model, 3, max_new)
    s = result.summary
    assert (s["mode"], s["dataset"], s["split"], s["skipped"]) == (mode, "gsm8k", "test", 0)
    for p in result.predictions:
        assert math.isfinite(p["gold_value"])
        opening = 1 + (1 + model.config.num_iterations if mode == "latent" else 0)
        assert p["forward_passes"] == opening + p["generated_tokens"] - 1
    write_results(result, tmp_path)
    print(name, s["accuracy"], s["mean_forward_passes"], [p["prediction"][:60] for p in result.predictions])


@pytest.fixture(scope="module")
def smollm2():
    from kava.model.loading import smollm2_source

    return smollm2_source().load()
