# Set-up is two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: venv demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch from this pin installs from the local wheel cache; the package's own range is wider
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,metrics,quant]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/mindiesd-tune tune demo-flux --budget 4m --out runs/demo-flux

test: venv
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# the edit loop: every module's fast tests, without those marked slow; `make test` is what CI runs
test-fast: venv
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
