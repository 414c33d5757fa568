"""The demo pipeline end to end with a handful of steps (wiring, outputs, recipe), not its accuracy."""

from __future__ import annotations

import json

from kava.demo.run import DemoSettings, run_demo


def test_demo_pipeline_writes_summary_runs_and_plot(tmp_path):
    s = DemoSettings(methods=("nocot", "kava"), steps={"nocot": 2, "cot": 2, "latent": 2},
                     batch_size=4, test_size=6, eval_batch_size=3, num_latents=3, num_iterations=2)
    out = run_demo(tmp_path, s, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"nocot", "kava"}
    assert summary["test_questions"] == 6
    kava = summary["methods"]["kava"]
    # 1 init + T iterations + 1 (<eot> P) + one per further answer token: at least 4 with T = 2.
    assert kava["forward_passes"]["mean"] >= 4
    assert (tmp_path / "accuracy_vs_forward_passes.png").exists()
    # cot was trained (the latent methods start from it) but not reported, as asked.
    assert (tmp_path / "runs" / "cot-seed0" / "final" / "kava_config.json").exists()
    assert (tmp_path / "runs" / "kava-seed0" / "eval" / "predictions.jsonl").exists()
    assert out["methods"].keys() == summary["methods"].keys()
