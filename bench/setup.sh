#!/usr/bin/env bash
# Creates bench/.venv (git-ignored) with the Python side of the benchmarks:
# PyTorch (CPU use only), sentence-transformers, faiss-cpu (the crate's Faiss version) and numpy, all from PyPI.
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
FAISS_VERSION=1.12.0

check() {
    "$VENV/bin/python" - "$FAISS_VERSION" <<'PY' 2>/dev/null
import faiss, numpy, sentence_transformers, torch, sys
assert faiss.__version__ == sys.argv[1], f"faiss {faiss.__version__}, not {sys.argv[1]}"
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
# faiss-cpu is pinned to the Faiss version the `faiss` crate builds (1.12), so the index benchmark compares the
# same library underneath: 1.15's polysemous PQ training is faster than 1.12's (docs/benchmarks.md).
"$VENV/bin/python" -m pip install --progress-bar off torch sentence-transformers "faiss-cpu==$FAISS_VERSION" numpy

check || { echo "bench/setup.sh: the packages do not import" >&2; exit 1; }
echo "bench/setup.sh: $VENV is ready"
