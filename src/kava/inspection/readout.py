"""What the latents hold across a dataset: each slot's LM-head reading against the written trace.

`kava inspect --question` shows what one question's slots say; whether they say the trace is a
statistic over many questions. Slot m *reads* position p of a question's teacher sequence (its
trace, then its answer) when the slot's most likely token after the last latent pass is the
sequence's token at p. Tasks with a fixed format (iCoT's multiplication: every 4×4 trace has the
same 53 positions, partial products and running sums) give every position one meaning, so the
rate over questions says which trace digit a slot carries. Digits repeat, so some matches are
chance: the baseline counts the same slot against the *next* question's sequence, which keeps the
format and the digit frequencies but not this question's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kava.data.records import Record


@dataclass
class Readout:
    """Match rates of every latent slot against every position of the teacher sequence."""

    labels: list[str]  # a column per sequence position: the first question's token there (a0.. for the answer)
    match: torch.Tensor  # [M, P] share of questions whose slot m reads its own sequence's token at p
    chance: torch.Tensor  # [M, P] the same against the next question's sequence
    covered: torch.Tensor  # [P] questions whose sequences reach position p (all of them in a fixed format)
    in_own: torch.Tensor  # [M] share of slot m's readings that occur anywhere in the question's own sequence
    in_other: torch.Tensor  # [M] the same for the next question's sequence
    common: list[tuple[str, float]]  # per slot: its most frequent reading and the share of questions
    questions: int
    pass_label: str  # which latent pass was read: the last one, the one the answer attends to

    def best(self) -> list[tuple[int, float, float]]:
        """Per slot: the position it reads most above chance, its rate and the chance rate there."""
        lift = self.match - self.chance
        p = lift.argmax(dim=1)
        return [(int(p[m]), float(self.match[m, p[m]]), float(self.chance[m, p[m]])) for m in range(len(p))]

    def to_json(self) -> dict:
        return {"questions": self.questions, "pass": self.pass_label, "labels": self.labels,
                "covered": self.covered.tolist(),
                "match": [[round(v, 4) for v in row] for row in self.match.tolist()],
                "chance": [[round(v, 4) for v in row] for row in self.chance.tolist()],
                "in_own_sequence": [round(v, 4) for v in self.in_own.tolist()],
                "in_next_sequence": [round(v, 4) for v in self.in_other.tolist()],
                "most_common": [{"token": t, "share": round(f, 4)} for t, f in self.common],
                "best": [{"slot": m + 1, "position": p, "label": self.labels[p], "match": round(r, 4), "chance": round(c, 4)}
                         for m, (p, r, c) in enumerate(self.best())]}


def reference_ids(model, record: Record) -> list[int]:
    """The teacher sequence a latent could stand for: the whole trace, then the answer (no eos)."""
    b = model.builder
    return b.cot_ids(record.steps, drop_last=False) + b.answer_ids(record.answer)[:-1]


def latent_readings(model, questions: Sequence[str], batch_size: int = 100) -> tuple[torch.Tensor, str]:
    """The top-1 token id of every latent slot after the last latent pass: [N, M], and the pass's name."""
    from kava.inspection.api import check_latent_model
    from kava.inspection.latent_tokens import pass_labels

    check_latent_model(model)
    was_training = model.training
    model.eval()
    rows, label = [], ""
    try:
        with torch.no_grad():
            for i in range(0, len(questions), batch_size):
                hidden: list[torch.Tensor] = []
                prefix = model.builder.student_prefix(list(questions[i:i + batch_size]))
                model.latents(prefix["s_prefix_ids"].to(model.device), prefix["s_prefix_mask"].to(model.device),
                              observe=hidden.append)
                rows.append(model.logits(hidden[-1]).argmax(dim=-1).cpu())
                label = pass_labels(len(hidden), model.config.latent_mode)[-1]
    finally:
        model.train(was_training)
    return torch.cat(rows), label


def latent_readout(model, records: Sequence[Record], batch_size: int = 100) -> Readout:
    """Read every record's latents and count, per slot and sequence position, own and chance matches."""
    if len(records) < 2:
        raise ValueError(f"a read-out compares a question with the next one: give at least 2 records, got {len(records)}")
    for i, r in enumerate(records):
        r.validate(need_steps=True, where=f"record {i}")
    readings, label = latent_readings(model, [r.question for r in records], batch_size)
    refs = [reference_ids(model, r) for r in records]
    N, M = readings.shape
    P = max(len(s) for s in refs)
    seq = torch.full((N, P), -1, dtype=torch.long)  # -1: past a shorter sequence's end, never a token id
    for i, s in enumerate(refs):
        seq[i, :len(s)] = torch.tensor(s)
    nxt = seq.roll(-1, dims=0)
    covered = (seq >= 0).sum(0)
    hits_own = readings[:, :, None] == seq[:, None, :]  # [N, M, P]
    hits_next = readings[:, :, None] == nxt[:, None, :]
    own = hits_own.float().sum(0) / covered.clamp(min=1)
    other = hits_next.float().sum(0) / (nxt >= 0).sum(0).clamp(min=1)
    in_own, in_other = hits_own.any(-1).float().mean(0), hits_next.any(-1).float().mean(0)
    modes = readings.mode(dim=0).values
    common = [(model.builder.tok.decode([int(t)]).strip() or "␣", float((readings[:, m] == t).float().mean()))
              for m, t in enumerate(modes)]
    first = model.builder.tok
    n_trace = len(model.builder.cot_ids(records[0].steps, drop_last=False))
    labels = [first.decode([t]).strip() or "␣" for t in refs[0][:n_trace]]
    labels += [f"a{j}" for j in range(len(refs[0]) - n_trace)]
    labels += [f"p{p}" for p in range(len(labels), P)]
    return Readout(labels, own, other, covered, in_own, in_other, common, N, label)


def save_readout_figure(r: Readout, path: str | Path, title: str = "") -> None:
    """One heatmap: slot × sequence position, the match rate above chance (white: chance or below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lift = (r.match - r.chance).clamp(min=0).numpy()
    M, P = lift.shape
    fig, ax = plt.subplots(figsize=(2.0 + 0.19 * P, 1.6 + 0.35 * M), constrained_layout=True)
    im = ax.imshow(lift, cmap="Reds", vmin=0, vmax=max(0.05, float(lift.max())), aspect="auto")
    ax.set_xticks(range(P), r.labels, fontsize=7)
    ax.set_yticks(range(M), [f"z{m + 1}" for m in range(M)])
    ax.set_xlabel("teacher sequence position (labels: the first question's trace, then answer digits a0…)")
    for m, (p, rate, chance) in enumerate(r.best()):
        if rate > chance:
            ax.text(p, m, f"{rate:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.9, label="match rate − chance")
    fig.suptitle(title or f"what each latent slot reads as (top-1 token after the {r.pass_label} pass), "
                 f"{r.questions} questions")
    fig.savefig(path, dpi=120)
    plt.close(fig)
