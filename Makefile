# vstain: the two commands a new user needs are `make demo` and `make test`.
# Both create .venv if missing and install torch==2.13.0 first (a CPU wheel on the dev machines;
# an unpinned torch would pull a multi-GB CUDA build), then the package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DEMO_OUT ?= demo-out
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test demo bench bench-quality clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/vstain demo --out $(DEMO_OUT) --overwrite

bench: install
	$(BIN)/vstain bench --quick --out bench.json

# Hours on a 2-core CPU: the CPU recipe on every plate variant (docs/quality.md); resumable.
bench-quality: install
	$(BIN)/vstain bench quality --out bench-quality

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
