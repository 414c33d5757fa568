"""The package face: ``import kava`` is cheap, and every public name resolves to its defining module."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import kava


def test_the_public_names_resolve_and_import_kava_loads_no_torch():
    for name in kava.__all__:
        assert getattr(kava, name) is not None
    assert kava.KavaModel.__module__ == "kava.model.kava_model"
    assert kava.preset("pccot").alpha_kv == 0
    assert set(kava.__all__) <= set(dir(kava))
    with pytest.raises(AttributeError, match="no attribute 'KaVaModel'"):
        kava.KaVaModel  # noqa: B018 - a typo must not pass silently
    # a fresh interpreter: the package and the CLI's dispatcher import without torch
    probe = "import sys, kava, kava.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_version_is_the_installed_distributions():
    assert kava.__version__ == importlib.metadata.version("kava")
