"""Do a demo model's latents hold the trace's intermediate values? (validation split, LM-head readout)

For each validation question, every latent slot's last-layer state after each pass (init, then
each Jacobi iteration; `run_latents`' ``observe`` hook, the passes unchanged) is read through the
LM head, and we ask whether the result of trace step s (``<<9*4=36>>`` → 36) is among the top-1
(or top-5) tokens of any slot. The chance level is the same check against *another* question's
step results (the next question of the batch): a value that turns up as often for the wrong
question says nothing. Reported overall, per step, per operation, and split by whether the model's
latent answer is right. Reads only demo runs (``runs/<method>-seed<k>/final``); never the test split.

    python benchmarks/studies/latent_readout.py /work/demo/runs/kava-seed0 /work/demo/runs/pccot-seed0 \
        --out docs/bench/latent_readout_demo.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

STEP = re.compile(r"<<\d+([+\-*/])\d+=(\d+)>>")
READOUTS = ("top1_last", "top5_last", "top1_any_pass")


def _hits(top: list[torch.Tensor], b: int, ids: set[int]) -> dict[str, bool]:
    """Whether one of ``ids`` is read from example ``b``'s latents; ``top`` holds [B, M, 5] ids per pass."""
    return {"top1_last": any(int(x) in ids for x in top[-1][b, :, 0]),
            "top5_last": any(int(x) in ids for x in top[-1][b].flatten()),
            "top1_any_pass": any(int(x) in ids for p in top for x in p[b, :, 0])}


def readout(run_dir: Path, n_valid: int, batch: int) -> dict:
    from kava.demo.task import SyntheticTask
    from kava.demo.run import trained_task
    from kava.evaluation.answering import answer_questions
    from kava.model.kava_model import KavaModel

    model = KavaModel.from_pretrained(run_dir / "final")
    model.eval()
    valid = SyntheticTask(trained_task(run_dir)).valid_set(n_valid)
    tok = model.tokenizer

    def number_ids(n: int) -> set[int]:
        return {tok.convert_tokens_to_ids(t) for t in (str(n), "▁" + str(n))}

    rows = []
    with torch.no_grad():
        answers = answer_questions(model, [r.question for r in valid], mode="latent")
        for i in range(0, len(valid), batch):
            chunk = valid[i : i + batch]
            hidden: list[torch.Tensor] = []
            prefix = model.builder.student_prefix([r.question for r in chunk])
            model.latents(prefix["s_prefix_ids"], prefix["s_prefix_mask"], observe=hidden.append)
            top = [model.logits(h).topk(5, dim=-1).indices for h in hidden]
            for b, r in enumerate(chunk):
                steps = [STEP.fullmatch(s).groups() for s in r.steps]
                other = [STEP.fullmatch(s).groups() for s in chunk[(b + 1) % len(chunk)].steps]
                got = answers[i + b].answer
                rows.append({"correct": got is not None and abs(got - float(r.answer)) < 1e-6,
                             "ops": [op for op, _ in steps],
                             "own": [_hits(top, b, number_ids(int(v))) for _, v in steps],
                             "other": [_hits(top, b, number_ids(int(v))) for _, v in other]})

    def rate(flags: list[bool]) -> dict:
        return {"percent": round(100 * sum(flags) / len(flags), 1) if flags else None, "n": len(flags)}

    report = {"run": str(run_dir), "method": model.config.method, "valid_questions": len(rows),
              "latent_accuracy": round(100 * sum(r["correct"] for r in rows) / len(rows), 1)}
    for key in READOUTS:
        report[key] = {
            "own_values": rate([h[key] for r in rows for h in r["own"]]),
            "chance_other_question": rate([h[key] for r in rows for h in r["other"]]),
            "by_step": [rate([r["own"][s][key] for r in rows if len(r["own"]) > s]) for s in range(3)],
            "by_op": {op: rate([h[key] for r in rows for o, h in zip(r["ops"], r["own"]) if o == op]) for op in "+-*/"},
            "answer_right": rate([h[key] for r in rows if r["correct"] for h in r["own"]]),
            "answer_wrong": rate([h[key] for r in rows if not r["correct"] for h in r["own"]]),
        }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="demo run folders (each holding final/ and config.json)")
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    reports = []
    for run_dir in args.runs:
        r = readout(run_dir, args.valid, args.batch)
        reports.append(r)
        print(f"{run_dir}: latent accuracy {r['latent_accuracy']} %; step values read top-1 (last pass) "
              f"{r['top1_last']['own_values']['percent']} % vs chance {r['top1_last']['chance_other_question']['percent']} %",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(reports, indent=1) + "\n")


if __name__ == "__main__":
    main()
