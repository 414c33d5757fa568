"""What would the published recipes cost on this machine? A measured training step per model shape,
scaled to the published runs' problem counts (issue 41: "estimate the budget it would need").

One training step (forward, backward, AdamW) of a `LlamaForCausalLM` in the demo's word-level task
tokenizer, on real validation rows of the task with their whole written trace (iCoT's first and
longest sequences; later iCoT steps are shorter, so this errs high for iCoT), fp32, the torch
threads this process has. Shapes are timed in interleaved rounds and the median step is kept
(the machine is noisy). Printed per row: parameters, the timed batch and its median step, the
problems the recipe trains on and hours on this machine at that rate per problem; nothing else
runs meanwhile or the numbers are meaningless.

Rows (published settings in docs/method.md §10 and the sources named beside each):
- mult4 / the demo's tiny Llama (4 layers, width 128): our slow-iCoT probe, 14,000 steps of 64.
- mult4 / Bai et al.'s 2-layer, 4-head, width-768 model: 13 epochs of their 80,800 problems
  (the iCoT model their probing code loads is `checkpoint_12`).
- prosqa / the tiny Llama: the shipped grid's 1,500 steps of 64.
- prosqa / GPT-2 small's shape (12 layers, width 768, 12 heads): Coconut's 50 epochs of its 17,886
  training questions (facebookresearch/coconut args/prosqa_coconut.yaml: num_epochs 50, GPT-2).

    KAVA_DATA_DIR=../shared/data python benchmarks/studies/task_budget.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = {
    "tiny (demo)": {},
    "Bai 2L4H-768": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 4},
    "GPT-2 small shape": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "num_key_value_heads": 12},
}
# (task, shape, timed batch, what, problems the recipe trains on). The big shapes are timed at a
# smaller batch and scaled per problem (their matrix products are already large at that batch).
ROWS = [
    ("mult4", "tiny (demo)", 64, "our slow-iCoT probe: 14,000 steps of 64", 14_000 * 64),
    ("mult4", "Bai 2L4H-768", 32, "Bai et al.'s iCoT: 13 epochs of 80,800", 13 * 80_800),
    ("prosqa", "tiny (demo)", 64, "the shipped grid's CoT run: 1,500 steps of 64", 1_500 * 64),
    ("prosqa", "GPT-2 small shape", 8, "Coconut's 50 epochs of 17,886", 50 * 17_886),
]


def batch(task: str, size: int) -> dict[str, torch.Tensor]:
    """``size`` validation rows of ``task`` as question, whole trace and answer, right-padded."""
    from kava.demo.dataset_tasks import dataset_task

    t = dataset_task(task)
    tok = t.tokenizer
    texts = [f"{r.question} {' '.join(s.strip() for s in r.steps)} The answer is: {r.answer}" for r in t.valid[:size]]
    enc = tok(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def step_time(model, optimizer, inputs) -> float:
    start = time.perf_counter()
    loss = model(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    from transformers import LlamaForCausalLM

    from kava.demo.dataset_tasks import dataset_task
    from kava.demo.tokenizer import tiny_llama_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median kept)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per shape per round (after one warm-up)")
    args = ap.parse_args()
    torch.manual_seed(0)
    setups = {}
    for task, shape, size, _, _ in ROWS:
        inputs = batch(task, size)
        model = LlamaForCausalLM(tiny_llama_config(len(dataset_task(task).tokenizer), **SHAPES[shape]))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step_time(model, optimizer, inputs)  # warm-up: allocations, AdamW state
        setups[task, shape] = (model, optimizer, inputs, [])
    for _ in range(args.rounds):
        for model, optimizer, inputs, times in setups.values():
            times.extend(step_time(model, optimizer, inputs) for _ in range(args.steps))
    print(f"torch threads {torch.get_num_threads()}, fp32, interleaved {args.rounds} rounds x {args.steps} steps, "
          "median step\n")
    print("| task | shape | parameters | tokens / row (padded) | timed batch | s / step | recipe | problems | hours here |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task, shape, size, what, problems in ROWS:
        model, _, inputs, times = setups[task, shape]
        params = sum(p.numel() for p in model.parameters())
        seconds = statistics.median(times)
        print(f"| {task} | {shape} | {params / 1e6:.1f}M | {inputs['input_ids'].shape[1]} | {size} | {seconds:.2f} | "
              f"{what} | {problems:,} | {problems / size * seconds / 3600:.1f} |")


if __name__ == "__main__":
    main()
