# The two quick-start commands (README): `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo test test-fast

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/kava demo --out outputs/demo

test:
	KAVA_EXTRAS=dev,lm-eval bash scripts/setup.sh
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"
