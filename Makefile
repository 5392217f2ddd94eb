# Fresh-clone entry points: `make demo`, `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch lies on local disk for this pin; an unpinned torch may pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

.PHONY: demo test lint bench install-core install-full browser clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.full: $(BIN)/python pyproject.toml
ifneq ($(HAS_GPU),1)
	$(BIN)/pip install -q $(TORCH_CPU)
endif
	$(BIN)/pip install -q -e '.[dev,gpu,routing,report]'
	touch $@

install-core: $(VENV)/.core
install-full: $(VENV)/.full

demo: $(VENV)/.full
	PATH=$(CURDIR)/$(BIN):$$PATH bash examples/demo.sh

# The report's browser test drives the system chromium (Playwright, no browser download). Debian's
# package is installed where it is missing and apt and root are at hand; else the test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "chromium not found and not installable here (needs apt-get and root):" \
			"the report's browser test will be skipped"; \
	fi

test: $(VENV)/.full browser
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(VENV)/.full
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vibe_plan

bench: $(VENV)/.full
	$(BIN)/python benchmarks/solve_bench.py
	$(BIN)/python benchmarks/recalibrate_bench.py
	$(BIN)/python benchmarks/routing_bench.py
	$(BIN)/python benchmarks/gpu_profile_bench.py --device cpu

clean:
	rm -rf $(VENV) build *.egg-info
