# The two set-up commands of the README:
#   make benchmark   install, then run the few-shot benchmark on the embedded glyphs dataset
#   make test        install with test extras, then run ruff and the whole test suite
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/benchmark
BENCH_ARGS ?=

.PHONY: benchmark test lint install docs peers clean-venv

install:
	VENV=$(VENV) scripts/bootstrap.sh

benchmark:
	VENV=$(VENV) scripts/bootstrap.sh
	$(BIN)/mtlmeta fewshot benchmark --dataset glyphs --out $(OUT) --overwrite $(BENCH_ARGS)

test:
	VENV=$(VENV) scripts/bootstrap.sh test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

docs:
	VENV=$(VENV) scripts/bootstrap.sh docs
	$(BIN)/mkdocs build --strict

# learn2learn and higher in their own venv (runs/peers-venv) for benchmarks/perf_meta.py; never in CI
peers:
	scripts/peers_env.sh

lint:
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
