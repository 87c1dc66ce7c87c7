# Two commands for a fresh machine: `make run` (the whole series) and `make test`.
# Both create .venv and install the project when needed.
#   make run DATASET=../shared/data/cifar10-jpg.tar.gz PROFILE=smoke VGG16_WEIGHTS=path/to.h5

PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
DATASET       ?= cifar100
PROFILE       ?=
VGG16_WEIGHTS ?= imagenet
OUT           ?= .
SEED          ?= 0
PYTEST_ARGS   ?=
STAMP         := $(VENV)/.cifarlab-installed

PROFILE_ARG := $(if $(PROFILE),--profile $(PROFILE),)

.PHONY: setup run series test bench lint clean help

help:
	@echo "make run    DATASET=... PROFILE=smoke|cpu|full VGG16_WEIGHTS=imagenet|none|FILE  (the series)"
	@echo "make series (the same series from the CLI, without notebooks)"
	@echo "make test   (the test suite)"
	@echo "make bench  (throughput benchmarks -> BENCHMARKS.md)"
	@echo "make lint   (ruff)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name cifarlab --display-name "Python (cifarlab)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# The series as the user meets it: the four notebooks executed in order by papermill
# (executed copies in reports/notebooks/), leaving models, histories and reports.
run: setup
	$(BIN)/python -m cifarlab notebooks --dataset $(DATASET) $(PROFILE_ARG) --out $(OUT) --seed $(SEED) --vgg16-weights $(VGG16_WEIGHTS)

# The same series from the command line, without notebooks.
series: setup
	$(BIN)/python -m cifarlab run --dataset $(DATASET) $(PROFILE_ARG) --out $(OUT) --seed $(SEED) --vgg16-weights $(VGG16_WEIGHTS)

# Throughput of every model on every installed backend, appended to BENCHMARKS.md.
bench: setup
	$(BIN)/python -m cifarlab bench --profile $(or $(PROFILE),cpu) --dataset $(DATASET) --markdown BENCHMARKS.md --kernel-vs-process

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf saved_models histories reports logs
