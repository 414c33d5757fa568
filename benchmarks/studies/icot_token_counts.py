"""iCoT's GSM8k removal schedule, counted in Mistral-7B's tokens, restated in Llama-3's.

The official GSM8k run (da03/Internalize_CoT_Step_by_Step, README "Command for GSM8K") fine-tunes
Mistral-7B-v0.1 and removes ``REMOVE_PER_EPOCH=8`` trace tokens an epoch, the whole trace once 39
are scheduled (``REMOVE_ALL_WHEN_REMOVE_BEYOND=39``), and skips batches longer than
``MAX_LEN_TRAIN=150`` tokens. Mistral's SentencePiece tokenizer writes every digit as a token;
Llama-3's tiktoken tokenizer groups up to three, so the same trace is fewer Llama-3 tokens and the
same numbers would remove more of it per epoch. This counts GSM8k-AUG traces (kava's ``gsm8k-aug``
valid split, the format iCoT's data uses: ``<<600*30/100=180>> <<...>>``) in both tokenizers and
restates the three numbers as the same share of the trace (of the whole sequence for the length
filter) in Llama-3's tokens.

The tokenizers come from PyPI wheels (no hub needed): Llama-3's ``tokenizer.model`` in
``llama-models``, Mistral-7B-v0.1's ``tokenizer.model.v1`` in ``mistral-common``::

    pip download --no-deps llama-models mistral-common -d /tmp/tok && pip install --target /tmp/tokpy tiktoken sentencepiece
    (cd /tmp/tok && unzip -o llama_models-*.whl 'llama_models/llama3/tokenizer.model' && unzip -o mistral_common-*.whl 'mistral_common/data/tokenizer.model.v1')
    PYTHONPATH=/tmp/tokpy KAVA_DATA_DIR=../shared/data python benchmarks/studies/icot_token_counts.py \\
        --llama3 /tmp/tok/llama_models/llama3/tokenizer.model --mistral /tmp/tok/mistral_common/data/tokenizer.model.v1
"""

from __future__ import annotations

import argparse
import base64
import statistics
from pathlib import Path

# Llama-3's pre-tokenizer (llama_models/llama3/tokenizer.py, Tokenizer.pat_str).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
OFFICIAL = {"remove_per_epoch": 8, "remove_all_when_remove_beyond": 39, "max_len_train": 150}


def llama3(path: Path):
    import tiktoken

    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in path.read_text().splitlines() if line)}
    return tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama3", type=Path, required=True, help="llama_models/llama3/tokenizer.model")
    ap.add_argument("--mistral", type=Path, required=True, help="mistral_common/data/tokenizer.model.v1")
    ap.add_argument("--steps-per-epoch", type=int, default=3013, help="the Llama config's optimizer steps an epoch")
    ap.add_argument("--dataset", nargs=2, default=["gsm8k-aug", "valid"], metavar=("NAME", "SPLIT"),
                    help="the traces counted (default: gsm8k-aug valid; the NL configs: gsm8k-train-aug-nl train)")
    args = ap.parse_args()
    import sentencepiece

    from kava.data.datasets import load_dataset

    ll, mi = llama3(args.llama3), sentencepiece.SentencePieceProcessor(model_file=str(args.mistral))
    records = load_dataset(*args.dataset, limit=2000).records
    traces = [" ".join(s.strip() for s in r.steps) for r in records]
    whole = [f"{r.question} {t} #### {r.answer}" for r, t in zip(records, traces)]
    t_ll, t_mi = [len(ll.encode(t)) for t in traces], [len(mi.encode(t)) for t in traces]
    w_ll, w_mi = [len(ll.encode(t)) for t in whole], [len(mi.encode(t)) for t in whole]
    trace_ratio = sum(t_ll) / sum(t_mi)
    whole_ratio = sum(w_ll) / sum(w_mi)
    per_epoch = OFFICIAL["remove_per_epoch"] * trace_ratio
    print(f"{len(records)} records of {' '.join(args.dataset)}")
    print(f"trace tokens, mean: Mistral-7B {statistics.fmean(t_mi):.1f}, Llama-3 {statistics.fmean(t_ll):.1f} "
          f"(Llama-3 / Mistral {trace_ratio:.3f}; Mistral / Llama-3 {1 / trace_ratio:.2f})")
    print(f"whole sequence tokens, mean: Mistral-7B {statistics.fmean(w_mi):.1f}, Llama-3 {statistics.fmean(w_ll):.1f} "
          f"(ratio {whole_ratio:.3f})")
    print(f"removed per epoch: 8 Mistral tokens = {per_epoch:.2f} Llama-3 tokens "
          f"-> stage_steps {args.steps_per_epoch / per_epoch:.0f} at {args.steps_per_epoch} steps an epoch (was "
          f"{args.steps_per_epoch / OFFICIAL['remove_per_epoch']:.0f})")
    print(f"remove_all_at: 39 Mistral tokens = {OFFICIAL['remove_all_when_remove_beyond'] * trace_ratio:.1f} Llama-3 tokens")
    print(f"max_len_train: 150 Mistral tokens = {OFFICIAL['max_len_train'] * whole_ratio:.1f} Llama-3 tokens; "
          f"sequences over it: {sum(w > 150 for w in w_mi) / len(w_mi):.1%} (Mistral, 150) vs "
          f"{sum(w > round(150 * whole_ratio) for w in w_ll) / len(w_ll):.1%} (Llama-3, {round(150 * whole_ratio)})")


if __name__ == "__main__":
    main()
