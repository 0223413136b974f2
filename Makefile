# minisoftpick: `make lab` opens the course, `make test` runs every test. Both create .venv and
# install the pinned dependencies (requirements.lock) and the package (editable) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LAB_ARGS ?=
DATA_DIR ?= data/shakespeare
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)  # containers often run as root; Jupyter refuses without it

.PHONY: lab test data venv-python lint format bench lock clean

# `make PYTHON=python3.X ...` with a .venv made by another Python would silently keep using that one.
PY_VERSION := import sys; print("%d.%d" % sys.version_info[:2])
venv-python:
ifneq ($(filter command line environment,$(origin PYTHON)),)
	@want=$$($(PYTHON) -c '$(PY_VERSION)') || { echo "make: PYTHON=$(PYTHON) does not run; install it or pick another"; exit 2; }; \
	if [ -x $(BIN)/python ]; then have=$$($(BIN)/python -c '$(PY_VERSION)'); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "make: $(VENV) was made with Python $$have, but PYTHON=$(PYTHON) is Python $$want."; \
	    echo "      Run \`make clean\` and then this command again to rebuild $(VENV) with Python $$want,"; \
	    echo "      or drop PYTHON=... to keep using $(VENV) (Python $$have)."; exit 2; fi; fi
endif

$(INSTALLED): requirements.lock constraints-cuda.lock pyproject.toml | venv-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

lab: venv-python $(INSTALLED) data  ## open the course in JupyterLab
	$(BIN)/jupyter lab --notebook-dir=notebooks $(ROOT_ARGS) $(LAB_ARGS)

test: venv-python $(INSTALLED) data  ## ruff, unit tests, every notebook under nbval (CPU, FAST presets, solutions)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check minisoftpick kernels tests bench experiments
	MSP_FAST=1 MSP_SOLUTIONS=1 $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 -p no:cacheprovider

data: $(INSTALLED)  ## fetch and tokenize the Shakespeare texts (pinned sha256), unless every file checks out
	@$(BIN)/python -m minisoftpick.data check --data-dir $(DATA_DIR) || { \
		echo "make data: preparing the token files again"; \
		$(BIN)/python -m minisoftpick.data prepare --out $(DATA_DIR); }

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check minisoftpick kernels tests bench experiments

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format minisoftpick kernels tests bench experiments

bench: $(INSTALLED)  ## GPU benchmark table (needs CUDA)
	$(BIN)/python bench/bench_attention.py

lock: $(INSTALLED)  ## rewrite requirements.lock from the current .venv (constraints-cuda.lock: see its header)
	grep -E '^(#|-c )' requirements.lock > requirements.lock.new
	$(BIN)/python -m pip freeze --all --exclude pip --exclude-editable | sed -e 's/+cpu//' \
		-e 's/^triton==\(.*\)/triton==\1; sys_platform == "linux"/' >> requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
