#!/usr/bin/env bash
# The test suite: installs missing system packages, then runs every crate's tests in release mode (BERT and Faiss
# are real, and release keeps the suite to minutes). Tests read the real assets in ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-packages.sh
cargo test --release --workspace "$@"
