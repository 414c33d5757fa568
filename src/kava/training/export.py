"""Export a trained model as one standalone folder: LoRA merged into the base weights.

A training checkpoint stores only what was trained (adapter, φ, new token rows) and points at
its base model by source; to serve it you need that base too, and each forward pays for the
LoRA side branches. The export folder is self-contained instead:

- a plain 🤗 model folder (``config.json``, ``model.safetensors`` with the merged weights),
  loadable by ``AutoModelForCausalLM.from_pretrained``;
- the kava tokenizer (with ``<bot> <eot> <latent>``) and ``kava_extra.safetensors`` (φ and the
  new token rows), ``kava_config.json`` and ``base_model.json`` naming the folder itself as the
  base, so ``KavaModel.from_pretrained(folder)`` rebuilds the latent-reasoning model with no
  other files.

The saved method config says ``finetune: full`` because that describes the folder: all weights,
no adapter. Continue LoRA training from the training checkpoint, not from an export.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kava.model.card import write_card
from kava.model.kava_model import KavaModel
from kava.model.loading import ModelSource
from kava.model.persistence import full_weights
from kava.training.checkpoint import atomic_dir, tensor_bytes


def export_merged(model: KavaModel, out_dir: str | Path, *, trained_dir: str | Path | None = None) -> Path:
    """Write ``model`` with its LoRA merged to ``out_dir`` (atomically); returns the folder.

    ``trained_dir``, the folder ``model`` was loaded from, passes its training facts and results on
    to the export's model card.

    The merge happens in place: afterwards ``model``'s base weights include the adapter, so use a
    model loaded for this purpose, not one that is still training. A write the disk refuses
    leaves no folder and raises `kava.runtime.disk.WriteFailed` with `export_bytes`.
    """
    out = Path(out_dir).resolve()
    lm = model.peft.merge_and_unload() if model.peft is not None else model.lm
    config = model.config.replace(finetune="full", extra={**model.config.extra, "exported_from": model.base_source.to_json() if model.base_source else {}})
    standalone = KavaModel(lm, model.tokenizer, config, base_source=ModelSource("local", "."))  # itself, wherever it is moved
    with torch.no_grad():
        standalone.embedding.new_rows.copy_(model.embedding.new_rows)
        if model.projection is not None:
            standalone.projection.load_state_dict(model.projection.state_dict())
    with atomic_dir(out, lambda: export_bytes(standalone)) as tmp:
        standalone.save_pretrained(tmp)  # kava files + model.safetensors (all weights)
        lm.config.save_pretrained(tmp)  # config.json: makes the folder a 🤗 model folder
        if getattr(lm, "generation_config", None) is not None:
            lm.generation_config.save_pretrained(tmp)
        write_card(tmp, inherit=trained_dir)  # now a 🤗 folder (config.json): the card says so
    return out


def export_bytes(standalone: KavaModel) -> int:
    """What an export needs, at least: the bytes of its tensors — every weight of the merged model
    (a tied output matrix once, as `full_weights` stores it) and the extras (φ, new token
    rows). The tokenizer and configs (kilobytes) and the files' headers come on top."""
    weights = full_weights(standalone.lm)
    extras = [standalone.embedding.new_rows]
    if standalone.projection is not None:
        extras.append(standalone.projection.state_dict())
    return tensor_bytes([weights, extras])
