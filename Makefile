# The two set-up commands of the README:
#   make study   create .venv, run the default study end to end, build the HTML report
#   make test    create .venv, run lint + the test suite (Snakemake smoke run included)
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= default
CORES ?= all
export WANDB_MODE ?= offline

.PHONY: setup study report test lint bench clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

study: setup
	$(BIN)/snakemake --cores $(CORES) --config study=$(STUDY)
	$(BIN)/snakemake --config study=$(STUDY) --report results/$(STUDY)/report.html
	@echo "report: results/$(STUDY)/report.html"

report: setup
	$(BIN)/snakemake --config study=$(STUDY) --report results/$(STUDY)/report.html

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint --config study=smoke

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf results .snakemake
