# The two quick-start commands (README): `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo test test-fast

# The tests read the real data files through KAVA_DATA_DIR (kava has no built-in data folder):
# ../shared/data beside the checkout, unless KAVA_DATA_DIR is already set.
test test-fast: export KAVA_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/kava demo --out outputs/demo

test:
	KAVA_EXTRAS=dev,lm-eval bash scripts/setup.sh
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"
