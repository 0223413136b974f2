# minisoftpick: `make lab` opens the course, `make test` runs every test. Both create .venv and
# install the pinned dependencies (requirements.lock) and the package (editable) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DATA := data/shakespeare/meta.json
LAB_ARGS ?=
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)  # containers often run as root; Jupyter refuses without it

.PHONY: lab test data lint format bench lock clean

$(INSTALLED): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

lab: $(INSTALLED) $(DATA)  ## open the course in JupyterLab
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_ARGS) $(LAB_ARGS)

test: $(INSTALLED) $(DATA)  ## ruff, unit tests, every notebook under nbval (CPU, FAST presets, solutions)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check minisoftpick kernels tests bench experiments
	MSP_FAST=1 MSP_SOLUTIONS=1 $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 -p no:cacheprovider

data: $(DATA)  ## fetch and tokenize the Shakespeare texts (pinned sha256)

$(DATA): | $(INSTALLED)
	$(BIN)/python -m minisoftpick.data prepare

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check minisoftpick kernels tests bench experiments

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format minisoftpick kernels tests bench experiments

bench: $(INSTALLED)  ## GPU benchmark table (needs CUDA)
	$(BIN)/python bench/bench_attention.py

lock: $(INSTALLED)  ## rewrite requirements.lock from the current .venv
	grep '^#' requirements.lock > requirements.lock.new
	$(BIN)/python -m pip freeze --exclude-editable | sed -e 's/+cpu//' \
		-e 's/^triton==\(.*\)/triton==\1; sys_platform == "linux"/' >> requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
