"""Looking inside a latent model (``kava inspect``; `kava.api.inspect`).

One module per job:

- `latent_tokens`: every latent slot's hidden state read through the LM head, after the init
  pass and after each Jacobi iteration (top-k tokens with probabilities);
- `kept_tokens`: which trace tokens the teacher-cache eviction keeps, per layer and KV head;
- `similarity`: cosine of the student's latent K/V against the compressed teacher K/V;
- `api`: `inspect_question`, which runs the model once for all three and returns an `Inspection`;
- `terminal`, `page`, `heatmap`: the text report, the HTML page, the PNG;
- `cli`: ``kava inspect``, a thin layer over the above.
"""

from kava.inspection.api import Inspection, inspect_question

__all__ = ["Inspection", "inspect_question"]
