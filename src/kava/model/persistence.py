"""A trained `KavaModel` on disk: what is saved, how it is found, checked and loaded back.

A model folder holds the method config (``kava_config.json``), where the base model came from
(``base_model.json``, `kava.model.loading`), the tokenizer, the trained extras (projection φ and
the new-token rows) and either the LoRA adapter or, for full fine-tuning, all weights — all in
safetensors, exactly what was trained and nothing of the frozen base.

Kept apart from the model class so that everything about the folder — its file names, finding it
in a run, checking it is whole before a slow load — lives in one place that commands can read
without the model, and so that kava_model is about computing, not files. The model is reached
structurally (`Trained`), and the class to build is passed in: kava_model imports this module,
never the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file

from kava.config import KavaConfig
from kava.runtime.integrity import CorruptFile, check_safetensors
from kava.runtime.layout import CHECKPOINT_MODEL, CHECKPOINT_PREFIX, CHECKPOINTS, FINAL
from kava.model.card import write_card
from kava.model.loading import BASE_FILE, ModelSource
from kava.model.projection import LatentProjection
from kava.model.tokens import ExtendedEmbedding

CONFIG_FILE = "kava_config.json"  # kava.model.card names it too
EXTRA_FILE = "kava_extra.safetensors"  # projection + new-token rows
FULL_FILE = "model.safetensors"  # full fine-tuning: all weights
ADAPTER_FILE = "adapter_model.safetensors"  # PEFT's name for the LoRA weights
FSDP_PREFIX = "_fsdp_wrapped_module."  # what FSDP puts in the names of the modules it wraps


class Trained(Protocol):
    """What saving and loading use of a `KavaModel`: its config, base record, tokenizer and trained parts."""

    config: KavaConfig
    base_source: ModelSource | None
    tokenizer: Any
    embedding: ExtendedEmbedding
    projection: LatentProjection | None
    peft: Any  # the PEFT wrapper with LoRA, None for full fine-tuning
    lm: Any  # the causal LM

    @property
    def device(self) -> torch.device: ...


M = TypeVar("M")
# Builds a model from (base LM, tokenizer, method config, base record): the `KavaModel` constructor.
Build = Callable[[Any, Any, KavaConfig, "ModelSource | None"], M]


def find_model_dir(path: str | Path) -> Path:
    """The kava model folder in ``path``: the folder itself, a run's ``final/`` (else its newest
    checkpoint's model), or a checkpoint's ``model/``. An export is a model folder itself."""
    p = Path(path)
    for candidate in (p, p / FINAL, p / CHECKPOINT_MODEL):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    steps = sorted(
        (int(c.name[len(CHECKPOINT_PREFIX):]), c / CHECKPOINT_MODEL)
        for c in (p / CHECKPOINTS).glob(f"{CHECKPOINT_PREFIX}*") if c.name[len(CHECKPOINT_PREFIX):].isdigit()
    )
    for _, candidate in reversed(steps):  # the newest checkpoint first
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{p}: not a kava model folder, run or checkpoint ({CONFIG_FILE} missing)")


def check_model_dir(directory: str | Path) -> None:
    """A kava model folder (``save_pretrained``): its config and base record parse, its weights are whole.

    Raises FileNotFoundError when it is not a kava model folder, `CorruptFile` when a file is damaged.
    """
    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{d}: not a kava model folder ({CONFIG_FILE} missing)")
    for name in (CONFIG_FILE, BASE_FILE):
        if (d / name).is_file():
            try:
                json.loads((d / name).read_text())
            except ValueError as e:
                raise CorruptFile(f"{d / name}: not valid JSON ({e})") from None
    weights = sorted(d.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{d}: no weights (*.safetensors) in the model folder")
    for path in weights:
        check_safetensors(path)


def _check_shapes(d: Path, saved: dict[str, torch.Tensor], model: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Refuse, in one line, saved tensors whose shapes differ from the model's (another base model)."""
    for name, tensor in saved.items():
        if name in model and tuple(model[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{d}: {prefix}{name} is {list(tensor.shape)} in the checkpoint but {list(model[name].shape)} "
                             "in this model: it was trained on another base model or configuration")


def _first_mismatch(error: RuntimeError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
    return lines[0].rstrip(".") if lines else " ".join(str(error).split())[:200]


def save(model: Trained, directory: str | Path) -> None:
    """Write config, tokenizer, adapter and extras (safetensors). Callers make it atomic."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.config.save(d / CONFIG_FILE)
    (d / BASE_FILE).write_text(json.dumps(model.base_source.to_json() if model.base_source else {}, indent=2) + "\n")
    model.tokenizer.save_pretrained(d)
    extra = {"new_rows": model.embedding.new_rows.detach().contiguous()}
    if model.projection is not None:
        extra.update({f"projection.{k}": v.contiguous() for k, v in model.projection.state_dict().items()})
    save_file(extra, str(d / EXTRA_FILE))
    if model.peft is not None:
        _save_adapter(model.peft, d)
    else:
        save_file({k: v.contiguous() for k, v in full_weights(model.lm).items()}, str(d / FULL_FILE))
    write_card(d)  # after PEFT's save, whose empty template it replaces


def _save_adapter(peft: Any, d: Path) -> None:
    """PEFT's ``save_pretrained``, also inside FSDP units.

    PEFT picks the adapter's entries by its layers' module names. Under FSDP kava's units sit inside
    the PeftModel, so those names read ``…layers.0._fsdp_wrapped_module.self_attn…`` (PEFT strips
    only a leading wrapper) while ``state_dict()`` keys do not: the adapter came out empty. There
    PEFT is given the named tensors (whose names carry the wrapper, so they match) and the
    wrapper is then taken out of the saved keys, which load into an unwrapped model.
    """
    if not any(FSDP_PREFIX in name for name, _ in peft.named_modules()):
        peft.save_pretrained(str(d), safe_serialization=True)
        return
    peft.save_pretrained(str(d), safe_serialization=True, state_dict={**dict(peft.named_parameters()),
                                                                      **dict(peft.named_buffers())})
    path = d / ADAPTER_FILE
    adapter = {k.replace(FSDP_PREFIX, ""): v.contiguous() for k, v in load_file(str(path)).items()}
    save_file(adapter, str(path), metadata={"format": "pt"})


def full_weights(lm: Any) -> dict[str, torch.Tensor]:
    """All weights of ``lm`` as ``model.safetensors`` stores them (full fine-tuning, an export).

    Tied embeddings share storage; safetensors refuses shared tensors, so the alias is dropped."""
    state = dict(lm.state_dict())
    if getattr(lm.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


def load_trained(model: Trained, directory: str | Path) -> None:
    """Load the trained parts saved by `save` into ``model`` (freshly built).

    A checkpoint that does not fit this model (trained on another base, or with another
    projection) is one `ValueError` naming the first tensor that differs, never a torch trace.
    """
    d = Path(directory)
    extra = load_file(str(d / EXTRA_FILE), device=str(model.device))
    _check_shapes(d, {"new_rows": extra["new_rows"]}, {"new_rows": model.embedding.new_rows})
    with torch.no_grad():
        model.embedding.new_rows.copy_(extra["new_rows"])
    if model.projection is not None:
        saved = {k[len("projection."):]: v for k, v in extra.items() if k.startswith("projection.")}
        _check_shapes(d, saved, model.projection.state_dict(), "projection.")
        model.projection.load_state_dict(saved)
    if model.peft is not None:
        from peft.utils import set_peft_model_state_dict

        adapter = load_file(str(d / ADAPTER_FILE), device=str(model.device))
        if not adapter:
            raise ValueError(f"{d / ADAPTER_FILE}: the adapter holds no weights")
        try:
            result = set_peft_model_state_dict(model.peft, adapter)
        except RuntimeError as e:  # torch lists every size mismatch; the first names the problem
            raise ValueError(f"{d}: the adapter does not fit this base model ({_first_mismatch(e)})") from None
        if result.unexpected_keys:
            raise ValueError(f"{d}: adapter has unexpected keys {result.unexpected_keys[:3]}")
    else:
        state = load_file(str(d / FULL_FILE), device=str(model.device))
        _check_shapes(d, state, model.lm.state_dict())
        missing, unexpected = model.lm.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise ValueError(f"{d}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load(build: Build[M], directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         base_model: Any = None) -> M:
    """Rebuild a saved model with ``build`` (the `KavaModel` class): base model from its recorded
    source (or the one given), then trained parts."""
    from transformers import AutoTokenizer

    d = find_model_dir(directory)
    config = KavaConfig.load(d / CONFIG_FILE)
    source = ModelSource.read(d)
    if base_model is None:
        if source is None:
            raise ValueError(f"{d}: no base model recorded ({BASE_FILE}); pass base_model=")
        if config.lora_enabled and source.kind == "config" and source.seed is None:
            raise ValueError(f"{d}: a LoRA checkpoint on a randomly initialised base with no recorded seed "
                             "cannot be rebuilt (its base weights were never saved); pass base_model=")
        base_model = source.load_model(dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(d))
    try:
        model = build(base_model.to(device), tokenizer, config, source)
    except ValueError as e:  # e.g. a tokenizer larger than the base's embedding: another base or tokenizer
        raise ValueError(f"{d}: {e}") from None
    load_trained(model, d)
    return model.to(device)
