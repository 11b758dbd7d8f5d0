#!/usr/bin/env bash
# Creates bench/.venv (git-ignored) with the Python side of the benchmarks:
# PyTorch (CPU use only), sentence-transformers, faiss-cpu and numpy, all from PyPI.
#
# Only PyPI is reachable, so this installs the plain `torch` wheel from PyPI. On Linux x86_64
# that is the CUDA build (with its nvidia-* dependency wheels, several GB); the benchmarks only
# ever use it on the CPU. Idempotent: a venv where all four packages import is left alone.
#
# Usage (from the repository root): bash bench/setup.sh
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=bench/.venv
PY=${PYTHON:-python3}

check() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import faiss, numpy, sentence_transformers, torch
print(f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, "
      f"faiss {faiss.__version__}, numpy {numpy.__version__}")
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "bench/setup.sh: $VENV is ready"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bench/setup.sh: creating $VENV"
    "$PY" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install --upgrade --quiet pip
echo "bench/setup.sh: installing torch, sentence-transformers, faiss-cpu, numpy from PyPI (large download)"
"$VENV/bin/python" -m pip install --progress-bar off torch sentence-transformers faiss-cpu numpy

check || { echo "bench/setup.sh: the packages do not import" >&2; exit 1; }
echo "bench/setup.sh: $VENV is ready"
