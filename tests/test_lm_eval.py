"""lm-evaluation-harness's ``kava`` model type against ``kava eval``: the same questions must get the
same answers, the same score and the same forward passes (docs/usage.md, "lm-evaluation-harness").

Two models: a tiny random latent model (answers are noise, but they must be the same noise) and the
demo-ablation grid's trained CoT model of seed 0 (about 70 % right: agreement on real answers). That
model is not in the repository; `DEMO_COT_COMMAND` makes it where the test looks for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import make_tokenizer, tiny_model
from kava.config import preset
from kava.evaluation.harness_cli import lm_eval_argv
from kava.evaluation.resumable import evaluate_checkpoint
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource

lm_eval = pytest.importorskip("lm_eval", reason="the kava[lm-eval] extra is not installed")

from kava.evaluation.harness import TASKS_DIR, KavaLM, cut_at, task_manager  # noqa: E402  (needs lm_eval)

REPO = Path(__file__).resolve().parents[1]
DEMO_COT = REPO / "outputs" / "demo-ablation" / "runs" / "cot-seed0" / "final"
DEMO_COT_COMMAND = "kava sweep configs/sweeps/demo-ablation.yaml --out outputs/demo-ablation --only cot-seed0"


def test_argv_adds_the_run_command_the_task_folder_and_the_device():
    argv = lm_eval_argv(["--model", "kava", "--tasks", "kava_gsm8k"], "/t", has_gpu=False)
    assert argv == ["run", "--model", "kava", "--tasks", "kava_gsm8k", "--include_path", "/t", "--device", "cpu"]
    assert lm_eval_argv(["run", "--device", "cuda:1", "--include_path=/mine"], "/t", has_gpu=False) == [
        "run", "--device", "cuda:1", "--include_path=/mine"]
    assert lm_eval_argv(["ls", "tasks"], "/t", has_gpu=False) == ["ls", "tasks", "--include_path", "/t"]
    assert lm_eval_argv(["--tasks", "x"], "/t", has_gpu=True)[-2:] == ["--include_path", "/t"]


def test_cut_at_stops_at_the_first_stop_string():
    assert cut_at("12 apples\n\nQuestion: next", ("\n\n", "Question:")) == "12 apples"
    assert cut_at("42", ()) == "42"


def test_every_shipped_task_names_a_registered_dataset():
    from kava.data.datasets import REGISTRY

    tasks = sorted(TASKS_DIR.glob("kava_*.yaml"))
    assert len(tasks) >= 8
    for path in tasks:
        text = path.read_text()
        name = text.split("name: ", 1)[1].split()[0]
        split = text.split("split: ", 1)[1].split()[0]
        assert name in REGISTRY and split in REGISTRY[name].splits, path.name


def save_tiny_latent(directory: Path) -> Path:
    """A tiny random KaVa model whose questions finish at different steps (eos when feature 0 is large)."""
    lm = tiny_model()
    model = KavaModel(lm, make_tokenizer(), preset("kava", finetune="full", num_latents=4),
                      base_source=ModelSource("config", config=lm.config.to_dict()))
    with torch.no_grad():
        row = model.lm.get_output_embeddings().weight[model.builder.eos_id]
        row.zero_()
        row[0] = 2.5
    model.save_pretrained(directory)
    return directory


def file_task(folder: Path, data: Path, name: str) -> str:
    """A task over a question file, built on kava's shared template (as a user's own task would be)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"include: {TASKS_DIR / '_kava_template_yaml'}\ntask: {name}\ndataset_kwargs:\n  name: {data}\n")
    (folder / "utils.py").write_text((TASKS_DIR / "utils.py").read_text())
    return name


def both_ways(tmp: Path, model_dir: Path, data: Path, **model_args) -> tuple[list[dict], dict, dict]:
    """(lm-eval's samples, lm-eval's results, kava eval's summary) on the same questions; kava eval's
    predictions are returned in the samples' order."""
    task = file_task(tmp / "tasks", data, "kava_file")
    results = lm_eval.simple_evaluate(
        model="kava", model_args={"pretrained": str(model_dir), **model_args}, tasks=[task], batch_size=8,
        device="cpu", log_samples=True, task_manager=task_manager(tmp / "tasks", include_defaults=False))
    samples = sorted(results["samples"][task], key=lambda s: s["doc"]["index"])
    summary = evaluate_checkpoint(model_dir, data, out=tmp / "kava-eval", batch_size=16, progress=False,
                                  max_new_tokens=model_args.get("max_new_tokens"))
    predictions = [json.loads(line) for line in (tmp / "kava-eval" / "predictions.jsonl").read_text().splitlines()]
    predictions.sort(key=lambda p: p["index"])
    return [{"sample": s, "kava": p} for s, p in zip(samples, predictions)], results, summary


def check_agreement(pairs: list[dict], results: dict, summary: dict, task: str = "kava_file") -> int:
    """Question by question: the same answer text, the same score; the same accuracy and passes."""
    for pair in pairs:
        sample, kava = pair["sample"], pair["kava"]
        assert sample["doc"]["question"] == kava["question"]
        assert sample["exact_match"] == float(kava["correct"]), kava["question"]
    right = sum(p["kava"]["correct"] for p in pairs)
    assert math.isclose(results["results"][task]["exact_match,none"], right / len(pairs))
    assert math.isclose(results["results"][task]["exact_match,none"], summary["accuracy"])
    info = results["config"]
    assert info["kava_answers"] == len(pairs)
    assert math.isclose(info["kava_mean_forward_passes"], summary["mean_forward_passes"])
    return right


@pytest.mark.slow
def test_lm_eval_scores_a_latent_model_as_kava_eval_does(tmp_path, one_thread):
    model_dir = save_tiny_latent(tmp_path / "tiny")
    rows = [{"question": f"Tom has {a} apples and gets {b} more. How many apples?", "answer": str(a + b)}
            for a, b in [(3, 4), (12, 7), (5, 5), (40, 2), (9, 11), (1, 30), (8, 8), (17, 3), (6, 60), (2, 2)]]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, results, summary = both_ways(tmp_path, model_dir, data, max_new_tokens=6)
    for pair in pairs:  # latent mode: lm-eval receives the whole answer kava eval reads
        assert pair["sample"]["resps"][0][0] == pair["kava"]["prediction"]
    check_agreement(pairs, results, summary)
    assert results["config"]["kava_mode"] == "latent"


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_COT.is_dir(), reason=f"no demo CoT model in {DEMO_COT.relative_to(REPO)}: "
                    f"`{DEMO_COT_COMMAND}` makes it (~4 min at one thread)")
def test_lm_eval_scores_the_demo_cot_model_as_kava_eval_does(tmp_path, one_thread):
    from kava.demo.run import DemoSettings
    from kava.demo.task import SyntheticTask

    test = SyntheticTask(DemoSettings().task).test_set(500)[:40]
    data = tmp_path / "demo-test.jsonl"
    data.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in test))
    pairs, results, summary = both_ways(tmp_path, DEMO_COT, data)
    right = check_agreement(pairs, results, summary)
    assert right >= 10, f"the demo's CoT model got {right}/40: agreement on real answers needs right ones"
    for pair in pairs:  # cot mode: lm-eval receives the part after the answer prompt
        assert pair["kava"]["prediction"].endswith(pair["sample"]["resps"][0][0])


def test_loglikelihood_is_the_language_models_in_direct_mode_and_refused_in_latent(tmp_path, one_thread):
    model_dir = save_tiny_latent(tmp_path / "tiny")
    latent = KavaLM(pretrained=str(model_dir))
    with pytest.raises(NotImplementedError, match="latent mode"):
        latent.loglikelihood([])
    direct = KavaLM(pretrained=str(model_dir), mode="direct")

    class Request:  # lm-eval's Instance carries its (context, continuation) as .args
        args = ("Tom has 3 apples.", " He has 3.")

    (logp, greedy), = direct.loglikelihood([Request()])
    builder, model = direct.model.builder, direct.model
    head = builder.bos_ids + builder.encode("Tom has 3 apples.")
    ids = torch.tensor([head + builder.encode(" He has 3.")])
    with torch.no_grad():
        logits = model.lm(input_ids=ids).logits.float().log_softmax(-1)
    expected = sum(float(logits[0, t - 1, ids[0, t]]) for t in range(len(head), ids.shape[1]))
    assert logp == pytest.approx(expected, abs=1e-4)
    assert isinstance(greedy, bool)


def test_bad_model_args_and_generation_settings_are_named(tmp_path, one_thread):
    model_dir = save_tiny_latent(tmp_path / "tiny")
    with pytest.raises(ValueError, match="does not take temprature"):
        KavaLM(pretrained=str(model_dir), temprature=0.5)
    with pytest.raises(ValueError, match="batch_size auto"):
        KavaLM(pretrained=str(model_dir), batch_size="auto")
    model = KavaLM(pretrained=str(model_dir))
    with pytest.raises(ValueError, match="does not support num_beams"):
        model._settings({"until": [], "num_beams": 4})


def test_kava_lm_eval_without_the_extra_says_how_to_get_it(monkeypatch, capsys):
    import argparse
    import sys

    from kava.evaluation import harness_cli

    monkeypatch.setitem(sys.modules, "lm_eval._cli.harness", None)  # as if lm-eval were not installed
    assert harness_cli.run(argparse.Namespace(passed=["--tasks", "kava_gsm8k"])) == 2
    assert "pip install 'kava[lm-eval]'" in capsys.readouterr().err


def test_task_scoring_follows_the_datasets_answer_kind():
    """MATH answers by LaTeX equivalence and AQuA by letter, as kava eval grades them."""
    from kava.evaluation.harness_tasks import load, process_results

    math = load("math500", "test", limit=3)["test"]
    doc = math[0]
    assert doc["answer_kind"] == "math"
    assert process_results(doc, [f"so the answer is $\\boxed{{{doc['answer']}}}$"]) == {"exact_match": 1.0}
    assert process_results(doc, ["\\boxed{123456789}"]) == {"exact_match": 0.0}
    aqua = load("aqua", "test", limit=2)["test"][0]
    assert aqua["answer_kind"] == "choice" and len(aqua["options"]) == 5
    wrong = "A" if aqua["answer"] != "A" else "B"
    assert process_results(aqua, [f"The answer is ({aqua['answer']})"]) == {"exact_match": 1.0}
    assert process_results(aqua, [f"The answer is ({wrong})"]) == {"exact_match": 0.0}
    gsm = load("gsm8k", "test", limit=1)["test"][0]
    assert process_results(gsm, [f"it is {gsm['answer']}"]) == {"exact_match": 1.0}
