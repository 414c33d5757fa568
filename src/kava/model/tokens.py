"""The new special tokens and their trainable embedding rows.

LoRA alone leaves rows added by ``resize_token_embeddings`` frozen at their initial values (a
known bug of earlier latent-reasoning code). Instead of resizing the frozen matrix we keep the
new rows in a small trainable parameter and look ids up in one of the two tables, so the base
embedding stays untouched and only the new rows learn.
"""

from __future__ import annotations

import torch
from torch import nn

from kava.config import ConfigError
from kava.model.sequences import SPECIAL_TOKENS
from kava.model.arch import embedding_scale


def rows_source(tokenizer, setting: str) -> int | None:
    """The token id whose row the new rows copy under ``method.new_rows_init: copy:<text>`` (None for
    ``mean``); the text must be one token of this tokenizer."""
    if setting == "mean":
        return None
    text = setting[len("copy:"):]
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"method.new_rows_init: {text!r} is {len(ids)} tokens in this tokenizer, not one; "
                         "name a single token or use mean")
    return ids[0]


def add_special_tokens(tokenizer) -> int:
    """Add ``<bot> <eot> <latent>`` when absent; returns the first new id (the base vocab size)."""
    vocab = tokenizer.get_vocab()
    present = [t in vocab for t in SPECIAL_TOKENS]
    if all(present):
        first = min(tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
        if len(tokenizer) != first + len(SPECIAL_TOKENS):  # later ids would read the new rows' table
            raise ValueError(f"tokenizer has {len(tokenizer) - first - len(SPECIAL_TOKENS)} tokens after kava's "
                             f"{SPECIAL_TOKENS}: it is not the tokenizer this model was trained with")
        return first
    if any(present):
        raise ValueError(f"tokenizer has only some of {SPECIAL_TOKENS}; use a base tokenizer or a kava one")
    first_new = len(tokenizer)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if ids != list(range(first_new, first_new + len(SPECIAL_TOKENS))):
        raise ValueError(f"unexpected ids {ids} for the new special tokens (expected consecutive from {first_new})")
    return first_new


class ExtendedEmbedding(nn.Module):
    """Base embedding table + trainable rows for ids >= ``first_new_id``.

    The new rows live in the table's units and are scaled as the base module scales its own rows
    (Gemma multiplies by √hidden inside the embedding), so a new token enters at the same scale.
    """

    def __init__(self, base: nn.Embedding, first_new_id: int, n_new: int = len(SPECIAL_TOKENS), seed: int = 0,
                 copy_of: int | None = None):
        super().__init__()
        if first_new_id > base.num_embeddings:
            raise ValueError(
                f"tokenizer has {first_new_id} tokens but the model's embedding only {base.num_embeddings} rows"
            )
        # Not registered: the base table belongs to the LM (owner of its weight, moved and wrapped
        # with it); a second registration here would make FSDP's auto-wrap reach it twice.
        self.__dict__["base"] = base
        self.first_new_id = first_new_id
        self.scale = embedding_scale(base)
        w = base.weight.detach().float()
        if copy_of is not None:  # every new row a copy of one token's (official Coconut's choice)
            init = w[copy_of].expand(n_new, -1).clone()
        else:  # near the mean embedding, each row distinct, so new tokens begin in-distribution
            g = torch.Generator().manual_seed(seed)
            init = w.mean(0, keepdim=True) + 0.02 * w.std() * torch.randn(n_new, w.shape[1], generator=g)
        self.new_rows = nn.Parameter(init.to(base.weight.dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_new = ids >= self.first_new_id
        base = self.base(ids.masked_fill(is_new, 0))
        new = self.new_rows[(ids - self.first_new_id).clamp(min=0, max=self.new_rows.shape[0] - 1)]
        return torch.where(is_new.unsqueeze(-1), (new * self.scale).to(base.dtype), base)
