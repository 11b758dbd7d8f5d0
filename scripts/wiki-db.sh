#!/usr/bin/env bash
# The retrieval DB that the demo and the QA and InstructRetro experiments share: the 10k Wikipedia summaries
# (corpus/wiki-vital-en), chunked with SmolLM2's tokenizer and embedded with MiniLM-L6-v2. `retro db build` resumes a
# killed build and skips finished stages, so on a built DB this is quick.
# Usage (from the repository root, after `cargo build --release`):
#   bash scripts/wiki-db.sh DATA OUT [retro's global flags, e.g. --threads 2]
# RETRO=BINARY runs another retro binary than target/release/retro. DOCS=N builds from the first N documents only
# (alphabetical by title; the demo's quick DB), copied to OUT.corpus.jsonl.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/wiki-db.sh DATA OUT [retro flags]" >&2
  exit 2
fi
data=$1 out=$2
shift 2
corpus="$data/corpus/wiki-vital-en.jsonl.gz"
if [ -n "${DOCS:-}" ]; then
  slice="$out.corpus.jsonl"
  if [ ! -f "$slice" ]; then
    mkdir -p "$(dirname "$out")"
    # `|| true`: head closes the pipe early, and gzip's SIGPIPE must not end the script under pipefail.
    { gzip -dc "$corpus" || true; } | head -n "$DOCS" > "$slice.tmp"
    mv "$slice.tmp" "$slice"
  fi
  corpus=$slice
fi
"${RETRO:-target/release/retro}" "$@" db build --corpus "$corpus" \
  --tokenizer "$data/models/smollm2-135m-instruct/tokenizer.json" \
  --embedder "$data/models/minilm-l6-v2" --out "$out"
