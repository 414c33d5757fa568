"""What does KaVa's eviction keep of a multiplication trace? Separators or digits (validation split).

For each validation question the teacher's compressed cache (`kava inspect`'s kept tokens, the
eviction training used) is counted by token kind: a separator is a trace token that is not a digit
(spaces, ``+``, ``(``, ``)``). Printed: the share of kept (layer, head, slot) entries that are
separators, per layer and overall, against the separators' share of trace positions.

    KAVA_DATA_DIR=../shared/data python benchmarks/studies/kept_separators.py outputs/mult4/runs/kava-seed0
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from kava.api import inspect
    from kava.data.datasets import load_dataset
    from kava.model.kava_model import KavaModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a trained KaVa run or model folder")
    ap.add_argument("--dataset", default="mult4")
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    model = KavaModel.from_pretrained(args.model)
    per_layer: dict[int, list[int]] = {}
    sep_pos = trace_pos = 0
    for r in load_dataset(args.dataset, "valid", limit=args.limit).records:
        kept = inspect(model, r.question, list(r.steps), answer=r.answer, top_k=1).kept
        toks = [t.strip() for t in kept.tokens]
        is_sep = torch.tensor([bool(c) and not toks[i].isdigit() for i, c in enumerate(kept.cot.tolist())])
        sep_pos, trace_pos = sep_pos + int(is_sep.sum()), trace_pos + int(kept.cot.sum())
        for layer, grid in enumerate(kept.kept):
            a = per_layer.setdefault(layer, [0, 0])
            a[0], a[1] = a[0] + int(grid[:, is_sep].sum()), a[1] + int(grid.sum())
    total = [sum(a[i] for a in per_layer.values()) for i in (0, 1)]
    print(f"kept entries that are separators: {total[0]}/{total[1]} = {total[0] / total[1]:.3f} "
          f"(separators are {sep_pos}/{trace_pos} = {sep_pos / trace_pos:.3f} of trace positions)")
    print("per layer:", ", ".join(f"L{l} {a[0] / a[1]:.3f}" for l, a in per_layer.items()))


if __name__ == "__main__":
    main()
