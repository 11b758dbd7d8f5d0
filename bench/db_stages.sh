#!/usr/bin/env bash
# The whole wiki-vital DB (10k documents) end to end: wall time and peak memory of each `retro db` stage, then the
# DB's stats. Prints a markdown table for docs/benchmarks.md.
# Usage: bash bench/db_stages.sh [DATA_DIR (default ../shared/data)] [OUT_DB (default bench/out/wiki-db)]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
DB=${2:-bench/out/wiki-db}
RETRO=target/release/retro
[ -x "$RETRO" ] || cargo build --release
command -v /usr/bin/time >/dev/null || bash scripts/ensure-system-packages.sh time
rm -rf "$DB"
mkdir -p "$(dirname "$DB")"
LOGS=$(mktemp -d)
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$LOGS/$name" "$RETRO" "$@" >/dev/null
}
run chunk db chunk --corpus "$DATA/corpus/wiki-vital-en.jsonl.gz" --tokenizer "$DATA/models/smollm2-135m-instruct/tokenizer.json" --out "$DB"
run embed db embed "$DB" --embedder "$DATA/models/minilm-l6-v2"
run index db index "$DB"
run neighbors db neighbors "$DB"
echo "| stage | wall s | peak RSS MiB |"
echo "|---|---|---|"
for s in chunk embed index neighbors; do
  read -r secs kb < "$LOGS/$s"
  echo "| $s | $secs | $((kb / 1024)) |"
done
echo
"$RETRO" db stats "$DB" --json
