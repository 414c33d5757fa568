"""The Python API of a trained model: ask it questions (`generate`), look inside its latents (`inspect`).

    from kava.api import generate, inspect
    from kava.model.kava_model import KavaModel

    model = KavaModel.from_pretrained("outputs/run")
    answer = generate(model, "Ben has 14 marbles. ...")
    inspection = inspect(model, question, ["<<14/2=7>>", "<<7*3=21>>"])

Thin functions over `kava.evaluation.answering` and `kava.inspection.api`, the code ``kava infer``
and ``kava inspect`` run. They sit here, at the top of the package, rather than as methods of
`KavaModel`, so the model imports nothing from the layers built on it: evaluation and inspection
depend on the model, never the reverse (tests/test_import_graph.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kava.evaluation.answering import Answer, answer_questions
from kava.evaluation.decoding import Sampling
from kava.inspection.api import Inspection, inspect_question
from kava.model.kava_model import KavaModel

__all__ = ["generate", "inspect"]


def generate(model: KavaModel, questions: str | Sequence[str], *, mode: str | None = None,
             temperature: float | None = None, top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
             batch_size: int = 32, inspect: bool = False) -> Answer | list[Answer]:
    """Answer one question (→ an `Answer`) or several (→ a list), greedily unless ``temperature``.

    ``mode``: ``latent``, ``cot`` or ``direct``; default the mode the model was trained for.
    Each answer carries its text, the number read from it, forward passes, tokens and latency
    (`kava.evaluation.answering`, the decoding `kava eval` uses); with ``inspect`` in latent
    mode also ``.inspection``, its latents read as tokens (`inspect`, no reference trace).
    """
    sampling = None if temperature is None else Sampling(temperature, top_p, seed)
    single = isinstance(questions, str)
    answers = answer_questions(model, [questions] if single else list(questions), mode=mode, sampling=sampling,
                               max_new_tokens=max_new_tokens, batch_size=batch_size)
    if inspect and answers and answers[0].mode == "latent":
        for a in answers:  # a sampled answer is not the greedy one the inspection reports (a copy: no cycle)
            a.inspection = inspect_question(model, a.question, reply=None if sampling else replace(a))
    return answers[0] if single else answers


def inspect(model: KavaModel, question: str, steps: Sequence[str] | None = None, *, answer: str | None = None,
            top_k: int = 5) -> Inspection:
    """Look inside the latents on one question (→ `kava.inspection.Inspection`, what ``kava inspect`` shows).

    Always: every latent slot read through the LM head after the init pass and each Jacobi
    iteration (top ``top_k``). With a reference trace ``steps`` (and its ``answer``, by default
    the last step's result): which trace tokens the eviction keeps per layer and KV head, and
    the cosine of the student's latent K/V against those compressed teacher entries.
    """
    return inspect_question(model, question, steps, answer, top_k)
