#!/usr/bin/env bash
# The GPU check of docs/performance.md, as one command on a GPU machine (with .gpu/ and .whl/ in the
# checkout; see gpu_check.py). Prepared first on a machine with network access (no GPU needed):
#   python benchmarks/gpu_check.py --prepare .gpu --data-dir ../shared/data   (or KAVA_DATA_DIR set)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 peft==0.21.2 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types typing-inspection
# A GPU image with torch and accelerate but an older transformers gets the pinned versions from the
# wheels. The demo part needs matplotlib: the check stops with one line before any work where the
# image lacks it (add its wheels to .whl then).
# Parts run in the order demo, steps, fsdp, throughput (the throughput part alone took ~4 minutes on
# an H200); none starts after 360 s (--deadline-s), so the whole check ends within about 10 minutes,
# and each finished part is already in $OUT/gpu_check.json. Arguments pass through, e.g.
# `bash benchmarks/gpu_check.sh --parts steps,fsdp`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/gpu_check.py --assets .gpu --out "${OUT:-gpu_check_out}" --deadline-s 360 "$@" 2>&1 | tee "${OUT:-.}/gpu_check.log"
