"""The kept-token view as one self-contained HTML page: inline CSS, no script, no server.

Trace tokens are shaded by how many (layer, KV head) pairs keep them; a grid below has a row per
layer (shaded by how many of its heads keep a token) and a row per head (kept or not). Every
token text goes through `html.escape`: a trace is model input, and `<<a+b=c>>` is not markup.
"""

from __future__ import annotations

from html import escape

from kava.inspection.api import Inspection
from kava.inspection.kept_tokens import KeptTokens

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.seq { line-height: 2.2; }
.tok { font-family: ui-monospace, monospace; white-space: pre; padding: 2px 1px; border-radius: 3px; }
.ctx { color: #888; }
.grid { overflow-x: auto; }
table { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 2px 4px; text-align: center; white-space: pre; }
th.row { text-align: left; background: #f6f6f6; }
tr.layer th.row { font-weight: bold; }
td.kept { background: rgb(214, 96, 77); color: white; }
.note { color: #555; max-width: 60em; }
"""


def shade(fraction: float) -> str:
    """A background for a token kept by ``fraction`` of the pairs: white (none) to red-orange (all)."""
    return f"background: rgba(214, 96, 77, {fraction:.3f});"


def _token(text: str, style: str = "", title: str = "", cls: str = "tok") -> str:
    attrs = f' class="{cls}"' + (f' style="{style}"' if style else "") + (f' title="{escape(title)}"' if title else "")
    return f"<span{attrs}>{escape(text)}</span>"


def kept_page(result: Inspection) -> str:
    """The page for an inspection that had a trace (``result.kept`` set)."""
    kept, cfg = result.kept, result.config
    L, H, _ = kept.kept.shape
    dropped = " The teacher drops the trace's last step (teacher_drop_last_step), so it is not in C'." \
        if cfg.teacher_drop_last_step else ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>kava inspect: kept trace tokens</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<h1>Kept trace tokens</h1>",
        f"<p><b>Question:</b> {escape(result.question)}</p>",
        f"<p><b>Trace:</b> <code>{escape(' '.join(result.trace.steps))}</code> → {escape(result.trace.answer)}</p>",
        (f'<p class="note">The teacher reads <code>[bos] Q C\' P A [eos]</code>; eviction ({escape(cfg.eviction)}, '
         f"λ = {cfg.eviction_lambda}, {escape(cfg.eviction_scope)}) keeps M = {kept.num_latents} of the trace tokens C' "
         f"in each of the {L} layers × {H} KV heads; those entries are the targets of the student's latent cache."
         f"{dropped} Shading: the share of the {L * H} (layer, head) pairs that keep a token; grey tokens are not "
         "trace tokens. Hover a token for its count.</p>"),
        "<h2>All layers and heads</h2>", f'<p class="seq">{_sequence(kept)}</p>',
        "<h2>Per layer and KV head</h2>", f'<div class="grid">{_grid(kept)}</div>',
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


def _sequence(kept: KeptTokens) -> str:
    L, H, _ = kept.kept.shape
    spans = []
    for text, is_cot, n in zip(kept.tokens, kept.cot.tolist(), kept.counts.tolist()):
        if is_cot:
            spans.append(_token(text, shade(n / (L * H)), f"kept by {n} of {L * H} (layer, head) pairs"))
        else:
            spans.append(_token(text, cls="tok ctx"))
    return "".join(spans)


def _grid(kept: KeptTokens) -> str:
    L, H, _ = kept.kept.shape
    cols = kept.cot.nonzero().flatten().tolist()
    by_layer = kept.kept.sum(dim=1)[:, cols].tolist()  # [L][C] heads keeping each trace token
    by_head = kept.kept[:, :, cols].tolist()  # [L][H][C]
    rows = ['<tr><th class="row"></th>' + "".join(f"<th>{escape(kept.tokens[c])}</th>" for c in cols) + "</tr>"]
    for l in range(L):
        cells = "".join(f'<td style="{shade(n / H)}" title="{n} of {H} heads">{n}</td>' for n in by_layer[l])
        rows.append(f'<tr class="layer"><th class="row">layer {l}</th>{cells}</tr>')
        for h in range(H):
            cells = "".join('<td class="kept">●</td>' if k else "<td></td>" for k in by_head[l][h])
            rows.append(f'<tr><th class="row">layer {l} · head {h}</th>{cells}</tr>')
    return "<table>" + "".join(rows) + "</table>"
