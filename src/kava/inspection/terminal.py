"""The terminal view of an `Inspection`: plain text, fixed-width columns, wrapped at ~100 chars.

Slots are numbered from 1 (z_1 … z_M, as in docs/method.md), layers and heads from 0 (as in
transformers).
"""

from __future__ import annotations

import math

from kava.inspection.api import Inspection
from kava.inspection.kept_tokens import KeptTokens
from kava.inspection.latent_tokens import LatentTokens
from kava.inspection.similarity import KVSimilarity

WIDTH = 100


def shown(token: str) -> str:
    """A token as one visible word: spaces around it dropped, an all-blank one quoted."""
    return token.strip() or repr(token)


def report(result: Inspection) -> str:
    cfg = result.config
    lines = [
        f"question: {result.question}",
        f"latent answer: {result.answer.text.strip()!r} ({result.answer.forward_passes} forward passes)",
        (f"settings: {cfg.method}, M = {cfg.num_latents}, T = {cfg.num_iterations} ({cfg.latent_mode}), eviction "
         f"{cfg.eviction} (λ = {cfg.eviction_lambda}, {cfg.eviction_scope}), keys compared {cfg.kv_key_space}"),
        "",
        *latent_table(result.latents),
        "",
    ]
    if result.trace is None:
        lines.append("no reference trace (--steps): kept tokens and the K/V similarity need one, skipped")
        return _joined(lines)
    lines += [f"trace: {' '.join(result.trace.steps)}  (answer {result.trace.answer})", "",
              *kept_grid(result.kept), "", *similarity_table(result.similarity)]
    return _joined(lines)


def _joined(lines: list[str]) -> str:
    return "".join(line.rstrip() + "\n" for line in lines)


def latent_table(latents: LatentTokens) -> list[str]:
    """Top-1 per pass and slot as a grid, then every slot's top-k, pass by pass."""
    P, M, k = latents.probs.shape
    label_w = max(len(p) for p in latents.passes)
    cells = [[f"{shown(latents.tokens[p][m][0])} {latents.probs[p, m, 0]:.2f}" for m in range(M)] for p in range(P)]
    w = max(max(len(c) for row in cells for c in row), 4)
    out = ["latents through the LM head: top-1 per pass (rows) and slot (columns), probability after the token",
           " " * label_w + "  " + "  ".join(f"z{m + 1}".ljust(w) for m in range(M))]
    out += [latents.passes[p].ljust(label_w) + "  " + "  ".join(c.ljust(w) for c in cells[p]) for p in range(P)]
    out += ["", f"top-{k} of every slot"]
    for p in range(P):
        for m in range(M):
            tops = "  ".join(f"{shown(t)} {q:.3f}" for t, q in zip(latents.tokens[p][m], latents.probs[p, m].tolist()))
            out.append(f"{latents.passes[p].ljust(label_w)}  z{m + 1:<3} {tops}")
    return out


def kept_grid(kept: KeptTokens) -> list[str]:
    """One row per (layer, KV head): ``#`` under each trace token it keeps, ``.`` under the rest;
    the last row counts the pairs keeping each token."""
    L, H, _ = kept.kept.shape
    cols = kept.cot.nonzero().flatten().tolist()
    n_c = len(cols)
    out = [(f"kept trace tokens: M = {kept.num_latents} of the {n_c} trace tokens per layer and KV head "
            f"(# kept, . evicted; 'all' = how many of the {L * H} (layer, head) pairs keep it)")]
    if n_c == 0:
        return out + ["(the teacher sequence has no trace tokens)"]
    texts = [shown(kept.tokens[c]) for c in cols]
    counts = kept.counts.tolist()
    widths = [max(len(t), len(str(counts[c]))) for t, c in zip(texts, cols)]
    labels = [f"L{l} H{h}" for l in range(L) for h in range(H)]
    label_w = max(len("all"), *(len(s) for s in labels))
    for chunk in _chunks(widths, WIDTH - label_w - 2):
        out.append(" " * label_w + "  " + " ".join(texts[i].ljust(widths[i]) for i in chunk))
        for r, label in enumerate(labels):
            row = kept.kept[r // H, r % H]
            out.append(label.ljust(label_w) + "  " + " ".join(("#" if row[cols[i]] else ".").ljust(widths[i]) for i in chunk))
        out.append("all".ljust(label_w) + "  " + " ".join(str(counts[cols[i]]).ljust(widths[i]) for i in chunk))
    per_layer = ", ".join(f"L{l} {n}" for l, n in enumerate(kept.per_layer.tolist()))
    out.append(f"distinct trace tokens kept per layer (any head): {per_layer}")
    return out


def _chunks(widths: list[int], room: int) -> list[list[int]]:
    """Split columns into runs that fit ``room`` characters (one space between columns)."""
    chunks, current, used = [], [], 0
    for i, w in enumerate(widths):
        if current and used + 1 + w > room:
            chunks.append(current)
            current, used = [], 0
        current.append(i)
        used += w + (1 if used else 0)
    return chunks + [current]


def similarity_table(sim: KVSimilarity) -> list[str]:
    """Mean-over-heads cosine per layer and slot, keys then values; '-' for a slot with no target."""
    L, M = sim.keys.shape
    out = [f"cosine(student latent K/V, compressed teacher K/V), mean over KV heads; keys {sim.key_space}"]
    for name, grid in (("keys", sim.keys), ("values", sim.values)):
        out.append(f"{name:<7}" + " ".join(f"z{m + 1}".rjust(6) for m in range(M)))
        for l in range(L):
            out.append(f"L{l:<6}" + " ".join("-".rjust(6) if math.isnan(v) else f"{v:6.2f}" for v in grid[l].tolist()))
    return out
