#!/usr/bin/env bash
# The paper's first claim at this machine's scale (issue 4): from one base GPT, on the same tokens with the same
# schedule, GPT-fit vs retro-fit (decoder unfrozen, reference random init) vs retro-fit with the decoder frozen vs
# retro-fit with --cca-init zero; validation perplexity of each with retrieval and with gate 0 (no neighbours), and
# every loss curve on one PNG. Writes experiments/retrofit/out/ and docs/results.md + docs/retrofit-loss.png.
#
# Sizes come from the environment (defaults = the full run, about 2.5 hours on 2 cores, measured 2026-11-30):
#   DB=DIR          an existing DB with neighbours (default: build one from both corpora in ../shared/data/corpus)
#   BASE_STEPS      pretraining steps of the small base GPT        (default 1500)
#   STEPS           steps of each of the four fitting runs          (default 400)
#   SEQ BATCH       tokens per sample, samples per step             (default 256, 8)
#   HIDDEN LAYERS   base GPT size (Llama, 4 heads, 2 KV heads)      (default 128, 12: CCA at layers 6, 9, 12)
#   EVAL_SAMPLES    validation samples per evaluation during training, 0 = all (default 64; the table uses all)
#   THREADS         (default: all cores)
#   OUT             run directory (default experiments/retrofit/out)
#   NOTES=FILE      a hand-written reading appended to docs/results.md (experiments/retrofit/notes.md for the run there)
# A quick smoke run (minutes): DB=demo-out/wiki-db BASE_STEPS=80 STEPS=40 SEQ=128 BATCH=4 HIDDEN=64 LAYERS=6 \
#   EVAL_SAMPLES=16 bash experiments/retrofit/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-experiments/retrofit/out}
BASE_STEPS=${BASE_STEPS:-1500}
STEPS=${STEPS:-400}
SEQ=${SEQ:-256}
BATCH=${BATCH:-8}
HIDDEN=${HIDDEN:-128}
LAYERS=${LAYERS:-12}
EVAL_SAMPLES=${EVAL_SAMPLES:-64}
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(--threads "$THREADS")

bash scripts/ensure-system-packages.sh
# RETRO=BINARY runs that binary (a copy) and skips the build, so that rebuilding the tree during a long run does not
# swap the program under it.
if [ -z "${RETRO:-}" ]; then
  cargo build --release -q -p retro-cli
fi
RETRO=${RETRO:-target/release/retro}
export RETRO
mkdir -p "$OUT"

if [ -z "${DB:-}" ]; then
  DB=$OUT/db
  if [ ! -f "$DB/neighbors/ids.bin" ]; then
    # Resumable: rerunning continues where a killed build stopped.
    $RETRO "${THREADS_FLAG[@]}" db build --corpus "$DATA/corpus/wiki-vital-en.jsonl.gz" \
      --corpus "$DATA/corpus/nltk-public-domain-en.jsonl.gz" \
      --tokenizer "$DATA/models/smollm2-135m-instruct/tokenizer.json" \
      --embedder "$DATA/models/minilm-l6-v2" --out "$DB"
  fi
fi

# The base GPT: SmolLM2-135M is too slow to fit meaningfully here (a 135M-parameter step at these sizes takes
# tens of seconds on 2 cores), so a small Llama with SmolLM2's tokenizer is pretrained on the DB's train split.
cat > "$OUT/base-config.json" <<JSON
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": $HIDDEN,
 "intermediate_size": $((HIDDEN * 4)), "num_hidden_layers": $LAYERS, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 49152,
 "tie_word_embeddings": true, "max_position_embeddings": 2048}
JSON
common=(--db "$DB" --batch "$BATCH" --seq-len "$SEQ" --eval-samples "$EVAL_SAMPLES" --seed 1234)
run_or_resume() { # NAME ARGS...: start a run, or resume it if a previous invocation was interrupted
  local name=$1; shift
  if [ -f "$OUT/$name/run.json" ]; then
    $RETRO "${THREADS_FLAG[@]}" train --resume "$OUT/$name" --eval-samples "$EVAL_SAMPLES"
  else
    $RETRO "${THREADS_FLAG[@]}" train "$@" --out "$OUT/$name"
  fi
}
run_or_resume base --mode pretrain --no-retrieval --model "$OUT/base-config.json" "${common[@]}" \
  --steps "$BASE_STEPS" --lr 1e-3 --min-lr 1e-4 --warmup $((BASE_STEPS / 20 + 1)) \
  --eval-every $((BASE_STEPS / 10 + 1)) --save-every 50
BASE=$OUT/base
fit=("${common[@]}" --model "$BASE" --steps "$STEPS" --lr 3e-4 --min-lr 3e-5 --warmup $((STEPS / 20 + 1))
     --eval-every $((STEPS / 8 + 1)) --save-every 50)
run_or_resume gptfit --mode gptfit "${fit[@]}"
run_or_resume retrofit --mode retrofit --cca-init random "${fit[@]}"
run_or_resume retrofit-frozen --mode retrofit --cca-init random --freeze-decoder "${fit[@]}"
run_or_resume retrofit-zero --mode retrofit --cca-init zero "${fit[@]}"
# Diagnostic (is there anything in the neighbours the new modules can learn at all?): only the encoder and CCA train,
# at ten times the learning rate; its perplexity with retrieval against gate 0 bounds what retrieval adds here.
run_or_resume retrofit-frozen-lr10 --mode retrofit --cca-init random --freeze-decoder "${common[@]}" --model "$BASE" \
  --steps "$STEPS" --lr 3e-3 --min-lr 3e-4 --warmup $((STEPS / 20 + 1)) --eval-every $((STEPS / 8 + 1)) --save-every 50

for run in base gptfit retrofit retrofit-frozen retrofit-zero retrofit-frozen-lr10; do
  for r in retrieval gate0; do
    f="$OUT/$run/ppl-$r.json"
    [ -f "$f" ] && continue
    flag=(); [ "$r" = gate0 ] && flag=(--no-retrieval)
    $RETRO "${THREADS_FLAG[@]}" eval ppl --model "$OUT/$run" --db "$DB" --seq-len "$SEQ" "${flag[@]}" --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
done
$RETRO plot gptfit="$OUT/gptfit" retrofit="$OUT/retrofit" retrofit-frozen="$OUT/retrofit-frozen" \
  retrofit-zero="$OUT/retrofit-zero" retrofit-frozen-lr10="$OUT/retrofit-frozen-lr10" --out docs/retrofit-loss.png --title "retro-fitting vs GPT-fitting (same tokens)"
python3 experiments/retrofit/report.py --out-dir "$OUT" --db "$DB" --base-steps "$BASE_STEPS" --steps "$STEPS" \
  --seq "$SEQ" --batch "$BATCH" --hidden "$HIDDEN" --layers "$LAYERS" ${NOTES:+--notes "$NOTES"} > docs/results.md.tmp
mv docs/results.md.tmp docs/results.md
echo "wrote docs/results.md and docs/retrofit-loss.png" >&2
