"""Cheap checks that a saved file is whole, before anything slow reads it.

A copy cut short (a full disk, an interrupted ``scp``) leaves a safetensors file whose header
promises more bytes than the file holds; loading it fails deep inside the loader with a
traceback, after the base model has been loaded. Reading the header (8 bytes of length, then
JSON) and comparing it with the file size finds that in microseconds. The check of a whole model
folder, which knows its file names, is `kava.model.persistence.check_model_dir`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_MAX_HEADER = 100 * 2**20  # safetensors caps its header at 100 MB


class CorruptFile(ValueError):
    """A saved file that cannot be what it claims to be; the message names it and says what to do."""


def check_safetensors(path: Path) -> None:
    """Raise `CorruptFile` unless ``path`` is a complete safetensors file (header and every byte it lists)."""
    size = path.stat().st_size
    hint = "re-copy it or use another checkpoint"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptFile(f"{path}: truncated safetensors file ({size} bytes, no header); {hint}")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise CorruptFile(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, file of {size}); {hint}")
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise CorruptFile(f"{path}: corrupt safetensors header ({e}); {hint}") from None
    if size != 8 + n + end:
        raise CorruptFile(f"{path}: truncated safetensors file ({size} bytes, its header lists {8 + n + end}); {hint}")

