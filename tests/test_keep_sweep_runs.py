"""scripts/keep_sweep_runs.sh: a sweep's finished runs kept for committing, the CoT model kept aside,
and never lost when the models folder is the sweep folder itself (it used to delete it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keep_sweep_runs.sh"
VENV_PYTHON = SCRIPT.parents[1] / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="the script runs the repository's .venv python")


def _sweep(root: Path) -> Path:
    src = root / "sweep"
    (src / "runs" / "cot-seed0" / "final").mkdir(parents=True)
    (src / "sweep.json").write_text(json.dumps({"runs": [{"name": "cot-seed0"}, {"name": "kava-seed0"}]}))
    run = src / "runs" / "cot-seed0"
    (run / "metrics.json").write_text("{}")
    (run / "config.json").write_text("{}")
    (run / "history.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1 / s}) + "\n" for s in range(1, 31)))
    (run / "final" / "model.safetensors").write_bytes(b"weights")
    return src


@pytest.mark.parametrize("models_is_sweep", [False, True])
def test_keep_out_keeps_records_and_the_cot_model(tmp_path, models_is_sweep):
    src = _sweep(tmp_path)
    keep, models = tmp_path / "keep", (src if models_is_sweep else tmp_path / "models")
    subprocess.run(["bash", str(SCRIPT), "out", str(src), str(keep), str(models)], check=True)
    kept = keep / "runs" / "cot-seed0"
    assert sorted(p.name for p in kept.iterdir()) == ["config.json", "history.jsonl", "metrics.json"]
    assert [json.loads(line)["step"] for line in (kept / "history.jsonl").open()] == [10, 20, 30]
    assert not (keep / "runs" / "kava-seed0").exists()  # planned, not finished
    assert (models / "runs" / "cot-seed0" / "final" / "model.safetensors").read_bytes() == b"weights"
    assert (src / "runs" / "cot-seed0" / "final" / "model.safetensors").read_bytes() == b"weights"
