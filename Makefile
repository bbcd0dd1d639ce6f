# The two set-up commands of the README:
#   make study   create .venv, run the default study end to end, build the HTML report
#   make test    create .venv, run lint + the test suite (Snakemake smoke run included)
#   make claims  the claims study (conf/study/claims.yaml): every claim's grid sized to decide it
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= default
CORES ?= all
export WANDB_MODE ?= offline

.PHONY: setup study claims report test lint bench clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

study: setup
	$(BIN)/snakemake --cores $(CORES) --config study=$(STUDY)
	$(BIN)/snakemake --config study=$(STUDY) --report results/$(STUDY)/report.html
	@echo "report: results/$(STUDY)/report.html"

claims:
	$(MAKE) study STUDY=claims

report: setup
	$(BIN)/snakemake --config study=$(STUDY) --report results/$(STUDY)/report.html

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint --config study=smoke group_size=1
	$(BIN)/snakemake --lint --config study=smoke group_size=16

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf results .snakemake
