"""Cheap checks that a saved model folder is whole, before anything slow reads it.

A copy cut short (a full disk, an interrupted ``scp``) leaves a safetensors file whose header
promises more bytes than the file holds; loading it fails deep inside the loader with a
traceback, after the base model has been loaded. Reading the header (8 bytes of length, then
JSON) and comparing it with the file size finds that in microseconds.
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


def check_model_dir(directory: str | Path) -> None:
    """A kava model folder (``save_pretrained``): its config and base record parse, its weights are whole.

    Raises FileNotFoundError when it is not a kava model folder, `CorruptFile` when a file is damaged.
    """
    from kava.model.kava_model import CONFIG_FILE
    from kava.model.loading import BASE_FILE

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
