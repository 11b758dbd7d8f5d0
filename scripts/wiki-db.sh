#!/usr/bin/env bash
# The retrieval DB that the demo and the QA and InstructRetro experiments share: the 10k Wikipedia summaries
# (corpus/wiki-vital-en), chunked with SmolLM2's tokenizer and embedded with MiniLM-L6-v2. `retro db build` resumes a
# killed build and skips finished stages, so on a built DB this is quick.
# Usage (from the repository root, after `cargo build --release`):
#   bash scripts/wiki-db.sh DATA OUT [retro's global flags, e.g. --threads 2]
# RETRO=BINARY runs another retro binary than target/release/retro.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/wiki-db.sh DATA OUT [retro flags]" >&2
  exit 2
fi
data=$1 out=$2
shift 2
"${RETRO:-target/release/retro}" "$@" db build --corpus "$data/corpus/wiki-vital-en.jsonl.gz" \
  --tokenizer "$data/models/smollm2-135m-instruct/tokenizer.json" \
  --embedder "$data/models/minilm-l6-v2" --out "$out"
