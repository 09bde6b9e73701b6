#!/usr/bin/env bash
# Makes the venv the peer benchmarks run in (bench/peer/*.py): torch 2.11.0 (CPU use of the PyPI wheel) with
# transformers, PEFT, TRL, accelerate, datasets and gguf, every package pinned and installed with --no-deps, so
# none of torch's CUDA packages (nvidia-*, cuda-*, triton: gigabytes, unused on the CPU) is pulled in.
#   bench/peer/install.sh VENV_DIR          (VENV_DIR outside the repository; PYTHON=python3.11 to choose)
# Not part of the build or the tests.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: bench/peer/install.sh VENV_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
venv=$(realpath -m "$1")
case "$venv/" in
  "$repo"/*) echo "bench/peer/install.sh: $1 is inside the repository ($repo); put the venv outside it" >&2; exit 2 ;;
esac

"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-deps --no-input)
# The project's rule for torch: the wheel and three small CUDA packages, no other CUDA runtime.
"${pip[@]}" torch==2.11.0 nvidia-cufile==1.15.1.6 nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5 \
  'setuptools<82'
# torch's small dependencies, then the Hugging Face stack, gguf and theirs (a resolved, pinned list).
"${pip[@]}" -r "$here/requirements.txt"

"$venv/bin/python" - <<'PY'
import torch, transformers, peft, trl, accelerate, datasets, gguf
x = torch.randn(64, 64)
assert torch.allclose(x @ torch.eye(64), x)
print("peer venv ready: torch", torch.__version__, "transformers", transformers.__version__, "peft",
      peft.__version__, "trl", trl.__version__, "accelerate", accelerate.__version__, "datasets",
      datasets.__version__)
PY
