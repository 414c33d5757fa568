"""What docs/inspect.md ("Looking inside the latents") says about 100 validation questions, recomputed.

Run from the repository root: ``python docs/inspect/survey.py RUN_FOLDER`` (the demo's
``outputs/demo/runs/kava-seed0``). Reads every question through `kava.api.inspect` with its trace.
"""

import re
import sys
from collections import Counter

from kava.api import inspect
from kava.demo.task import SyntheticTask
from kava.model.kava_model import KavaModel

model = KavaModel.from_pretrained(sys.argv[1])
records = SyntheticTask().valid_set(100)
top1, correct, answer_read, new_results, new_read, kept_numbers, kept_all, trace_numbers, trace_all = \
    Counter(), 0, 0, 0, 0, 0, 0, 0, 0
cos_k, cos_v = [], []
for r in records:
    res = inspect(model, r.question, list(r.steps), answer=r.answer)
    final = [slot[0].strip() for slot in res.latents.tokens[-1]]  # top-1 of each slot after the last iteration
    top1.update(final)
    correct += res.answer.answer == float(r.answer)
    results = [re.search(r"=(\d+)>>", s).group(1) for s in r.steps]
    answer_read += results[-1] in final
    for x in results:
        if x not in re.findall(r"\d+", r.question):  # a number the latents cannot copy from the question
            new_results += 1
            new_read += x in final
    for token, trace, n in zip(res.kept.tokens, res.kept.cot.tolist(), res.kept.counts.tolist()):
        if trace:
            kept_all += n
            kept_numbers += n * token.strip().isdigit()
            trace_all += 1
            trace_numbers += token.strip().isdigit()
    cos_k.append(res.similarity.keys.nanmean().item())
    cos_v.append(res.similarity.values.nanmean().item())
n = len(records)
print(f"latent answers right: {correct} / {n}")
print(f"most common top-1 tokens of the last pass: {top1.most_common(10)}")
print(f"a step result absent from the question is some slot's top-1: {new_read} / {new_results}")
print(f"the final answer is some slot's top-1: {answer_read} / {n}")
print(f"number tokens: {kept_numbers / kept_all:.3f} of kept entries, {trace_numbers / trace_all:.3f} of trace tokens")
print(f"mean cosine over layers and slots: keys {sum(cos_k) / n:.3f}, values {sum(cos_v) / n:.3f}")
