"""Two-process data parallelism on CPU (gloo, via torchrun): the same optimisation as one process.

Each process takes half of every step's records; DDP averages the gradients. With loss terms
that average over examples (CE, and L_KV without the layer-wise std when every latent slot is
valid) this equals one process on the whole batch, so the per-step losses must agree. CODI's
batch-level std is computed per micro-batch by design and is switched off here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kava.training.engine import train

from conftest import TRAIN_RECORDS as RECORDS, train_config as config, training_model as build

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # torchrun: two more processes

TESTS = Path(__file__).resolve().parent
OVERRIDES = {"alpha_codi": 0.0, "kv_layerwise_std": False, "lora_dropout": 0.0}
STEPS = 3
WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_ddp import OVERRIDES, STEPS
    from conftest import TRAIN_RECORDS as RECORDS, train_config as config, training_model as build
    from kava.training.engine import train
    train(build(**OVERRIDES), RECORDS, config(micro_batch_size=2, max_steps=STEPS, cpu=True), output_dir={out!r})
    """
)


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), out=str(out)))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ddp = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]

    single = train(build(**OVERRIDES), RECORDS, config(micro_batch_size=4, max_steps=STEPS), output_dir=tmp_path / "one")
    assert [e["step"] for e in ddp] == list(range(1, STEPS + 1))
    for a, b in zip(single.history, ddp):
        for term in ("loss", "ce_teacher", "ce_student", "kv"):
            assert b[term] == pytest.approx(a[term], abs=2e-5), (a["step"], term)
    ckpt = out / "checkpoints" / f"ckpt-{STEPS}"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
