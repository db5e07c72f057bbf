#!/usr/bin/env bash
# CI stage: the test suite on the oldest torch that pyproject.toml claims (torch 2.11.0 with
# torchvision 0.26.0, the pair the GPU machines carry), in a fresh virtual environment beside
# the main one. Meant to be called from .ci/run after the newest-torch job.
#   OLDEST_TORCH_TESTS  pytest arguments (default: the whole suite, "tests")
#   OLDEST_TORCH_VENV   where the environment goes (default: .venv-oldest-torch, git-ignored)
# torch 2.11.0 comes from PyPI as its CUDA build (about 5 GB with its nvidia-* wheels, about
# 2 minutes to install; the wheel alone does not import without libcudnn); it runs on the CPU.
set -euxo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
venv="${OLDEST_TORCH_VENV:-.venv-oldest-torch}"
read -r -a tests <<< "${OLDEST_TORCH_TESTS:-tests}"

python3 -m venv "$venv"
"$venv/bin/pip" install "torch==2.11.0" "torchvision==0.26.0" -e ".[dev]"
"$venv/bin/python" -c 'import torch; assert torch.__version__.startswith("2.11.0"), torch.__version__'
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
