#!/usr/bin/env bash
# `make test-gpu`: on a machine with an NVIDIA GPU, make sure llama-cpp-python can offload layers.
# The wheel `make` installs is a CPU build; this rebuilds the same pinned version with CUDA (needs nvcc; about
# ten minutes) only when a GPU is present and the installed build cannot offload. Elsewhere it does nothing.
set -euo pipefail
python="${1:?usage: ensure_cuda_llamacpp.sh PYTHON}"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no NVIDIA GPU here: the gpu tests will skip"
    exit 0
fi
if "$python" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)'; then
    echo "llama-cpp-python already offloads to the GPU"
    exit 0
fi
version=$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')
echo "rebuilding llama-cpp-python $version with CUDA"
CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=off" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$python" -m pip install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$version"
