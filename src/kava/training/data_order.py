"""Which records a training step sees, and how many tokens they are.

Exact resume rests on the order being a pure function of ``(seed, position)``: a seeded
permutation per epoch for a record list (`record_order`), or ``stream(seed, start)`` for an
endless stream. The checkpoint stores the position; nothing else about the data needs saving.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from kava.config import KavaConfig
from kava.data.records import Record

RecordStream = Callable[[int, int], Iterable[Record]]  # (seed, start index) -> endless records from there


def data_source(data: Sequence[Record] | RecordStream) -> tuple[list[Record] | None, RecordStream | None]:
    """``data`` as (records, None) for a list, or (None, stream) for a stream; an empty list is refused."""
    if callable(data):
        return None, data
    records = list(data)
    if not records:
        raise ValueError("no training records")
    return records, None


def order_from(records: list[Record] | None, stream: RecordStream | None, seed: int, start: int) -> Iterator[Record]:
    """The records from global position ``start`` on, endlessly, from whichever source `data_source` gave."""
    return iter(stream(seed, start)) if stream is not None else record_order(records, seed, start)


def record_order(records: Sequence[Record], seed: int, start: int = 0) -> Iterator[Record]:
    """Records in a fresh seeded permutation each epoch, endlessly, from global position ``start``.

    A pure function of ``(seed, start)``: resuming at ``start`` continues the very same order.
    """
    n = len(records)
    epoch, offset = divmod(start, n)
    while True:
        for i in np.random.default_rng([seed, epoch]).permutation(n)[offset:]:
            yield records[int(i)]
        epoch, offset = epoch + 1, 0


def count_tokens(batch: dict[str, torch.Tensor], config: KavaConfig) -> torch.Tensor:
    """Non-padding input tokens of a batch: teacher and student sequences, latent slots once each."""
    n = sum(batch[k].sum() for k in ("t_attention_mask", "s_prefix_mask", "s_answer_mask") if k in batch)
    if "s_prefix_ids" in batch:
        n_latents = int(batch["s_num_latents"]) if "s_num_latents" in batch else config.num_latents
        n = n + batch["s_prefix_ids"].shape[0] * n_latents
    return torch.as_tensor(n, dtype=torch.float32)
