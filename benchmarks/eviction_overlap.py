"""How much each eviction rule's kept set shares with kava's R-KV (`rkv`) on a demo batch.

The teacher pass of a demo CoT model (the demo-ablation grid's CoT run of the seed, its `final/` in
outputs/demo-ablation/runs/cot-seed<S>; `MAKE` below re-makes it) over
the first N test problems, under the demo's KaVa recipe (M = 8) with only the eviction changed;
per layer, example and KV head, |kept ∩ kept_rkv| / n_kept, averaged. "chance" is the mean of
min(M, N_C)/N_C, what two independent uniform choices share on average.

    PYTHONPATH=src python benchmarks/eviction_overlap.py [--seed 0] [--n 64]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from kava.compression import EVICTIONS
from kava.demo.run import DemoSettings, demo_model
from kava.demo.task import SyntheticTask
from kava.demo.tokenizer import build_tokenizer
from kava.model.kava_model import KavaModel
from kava.model.teacher_compression import teacher_targets

KEPT = Path(__file__).resolve().parents[1] / "outputs" / "demo-ablation" / "runs"
MAKE = "kava sweep configs/sweeps/demo-ablation.yaml --out outputs/demo-ablation --only cot-seed{seed}"
# The demo-evictions grid's knobs (configs/sweeps/demo-evictions.yaml): R-KV's recent window scaled to M = 8
OVERRIDES = {"rkv-official": {"rkv_recent": 1}}


def kept_sets(model: KavaModel, batch: dict[str, torch.Tensor], eviction: str) -> torch.Tensor:
    """[L, B, H, S] bool: the entries the eviction keeps."""
    cfg = model.config.replace(eviction=eviction, **OVERRIDES.get(eviction, {}))
    kv = teacher_targets(model, batch, cfg).kv
    L, B, H, M = kv.indices.shape
    out = torch.zeros(L, B, H, batch["t_cot_mask"].shape[1], dtype=torch.bool)
    return out.scatter(3, kv.indices, kv.slot_mask.view(1, B, 1, M).expand(L, B, H, M))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = DemoSettings()
    final = KEPT / f"cot-seed{args.seed}" / "final"
    if not final.is_dir():
        raise SystemExit(f"no CoT model in {final}: `{MAKE.format(seed=args.seed)}` makes it (~4 min at one thread)")
    cot = KavaModel.from_pretrained(final)
    model = demo_model(build_tokenizer(), s.method_config("kava"), args.seed, cot.lm.state_dict()).eval()
    records = SyntheticTask(s.task).test_set(s.test_size)[: args.n]
    batch = model.builder.training_batch(records)
    m, n_c = model.config.num_latents, batch["t_cot_mask"].sum(-1).float()
    print(f"seed {args.seed}, {len(records)} test problems, M = {m}, N_C mean {n_c.mean():.1f} "
          f"(min {int(n_c.min())}, max {int(n_c.max())}); chance {(n_c.clamp(max=m) / n_c).mean():.3f}")
    with torch.no_grad():
        base = kept_sets(model, batch, "rkv")
        for name in EVICTIONS:
            kept = kept_sets(model, batch, name)
            share = (kept & base).sum(-1).float() / kept.sum(-1).clamp(min=1)
            same = (kept == base).all(-1).float().mean()
            print(f"{name:14s} overlap with rkv {share.mean():.3f}  identical sets {same:.3f}")


if __name__ == "__main__":
    main()
