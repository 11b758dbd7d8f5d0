#!/usr/bin/env bash
# The InstructRetro pipeline at this machine's scale (issue 5's experiment). SmolLM2-135M-Instruct is the only
# pretrained GPT in ../shared/data (no base model was found, see its MANIFEST), so it is the starting point:
#   1. retro-fit it on the Wikipedia DB (encoder and CCA new, decoder unfrozen) and GPT-fit it on the same samples in
#      the same order for the same steps;
#   2. instruction-tune both on the same blend (self-instruct + P3 without its restrictively licensed tasks), same steps;
#   3. run experiments/qa/run.sh with both (GPT-fit-Instruct with RAG; InstructRetro with the encoder off and on,
#      beside the untouched SmolLM2-Instruct), which writes docs/results-qa.md.
# Every step resumes where a killed run stopped. Sizes from the environment:
#   FIT_STEPS (default 300), SEQ (256), BATCH (4), LR (1e-4)          the two fitting runs
#   SFT_STEPS (default 300), SFT_SEQ (512), SFT_BATCH (2), SFT_LR (5e-6, the reference's)
#   PPL_SAMPLES (default 64)                                          validation samples for the perplexity check
#   SFT_ONLY=1 also instruction-tunes the untouched model the same way (no fitting; OUT/untouched-sft) and adds its QA row,
#   the ablation that tells what fitting adds to QA from what SFT adds
#   LIMIT (1000), CONTEXTS (5), THREADS; OUT (default experiments/instructretro/out), QA_OUT, REPORT, QA_ARCHIVE
#   (see qa/run.sh); RESULTS (default docs/results-instructretro.md) and FIT_PLOT (default
#   docs/instructretro-fit-loss.png) move this script's own report and plot, so that a second run does not overwrite
#   the first's
# Between the stages it writes the two fitted models' validation perplexity (OUT/ppl-RUN-{retrieval,gate0}.json;
# issue 4's claim with SmolLM2 as the base) and their loss curves (FIT_PLOT); at the end
# RESULTS (NOTES=FILE and QA_NOTES=FILE append hand-written readings of the run, as
# experiments/instructretro/notes.md and experiments/qa/notes.md do for the run in docs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-experiments/instructretro/out}
FIT_STEPS=${FIT_STEPS:-300}; SEQ=${SEQ:-256}; BATCH=${BATCH:-4}; LR=${LR:-1e-4}
SFT_STEPS=${SFT_STEPS:-300}; SFT_SEQ=${SFT_SEQ:-512}; SFT_BATCH=${SFT_BATCH:-2}; SFT_LR=${SFT_LR:-5e-6}
DB=${DB:-demo-out/wiki-db}
RESULTS=${RESULTS:-docs/results-instructretro.md}
FIT_PLOT=${FIT_PLOT:-docs/instructretro-fit-loss.png}
THREADS_FLAG=()
[ -n "${THREADS:-}" ] && THREADS_FLAG=(--threads "$THREADS")
SMOL=$DATA/models/smollm2-135m-instruct

bash scripts/ensure-system-packages.sh
# RETRO=BINARY runs that binary (a copy) and skips the build, so that rebuilding the tree during a long run does not
# swap the program under it.
if [ -z "${RETRO:-}" ]; then
  cargo build --release -q -p retro-cli
fi
RETRO=${RETRO:-target/release/retro}
export RETRO
mkdir -p "$OUT"
bash scripts/wiki-db.sh "$DATA" "$DB" "${THREADS_FLAG[@]}" > /dev/null

train() { # RUN_DIR ARGS...: start the run, or resume it when it exists
  local dir=$1; shift
  if [ -f "$dir/run.json" ]; then
    $RETRO "${THREADS_FLAG[@]}" train --resume "$dir"
  else
    $RETRO "${THREADS_FLAG[@]}" train --out "$dir" "$@"
  fi
}
FIT=(--db "$DB" --steps "$FIT_STEPS" --seq-len "$SEQ" --batch "$BATCH" --lr "$LR" --eval-every 0 --save-every 25)
train "$OUT/retrofit" --mode retrofit --model "$SMOL" "${FIT[@]}"
train "$OUT/gptfit" --mode gptfit --model "$SMOL" "${FIT[@]}"
for run in retrofit gptfit; do
  for r in retrieval gate0; do
    f="$OUT/ppl-$run-$r.json"
    [ -f "$f" ] && continue
    flag=(); [ "$r" = gate0 ] && flag=(--no-retrieval)
    $RETRO "${THREADS_FLAG[@]}" eval ppl --model "$OUT/$run" --db "$DB" --seq-len "$SEQ" --limit "${PPL_SAMPLES:-64}" \
      "${flag[@]}" --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
done
$RETRO plot gptfit="$OUT/gptfit" retrofit="$OUT/retrofit" --out "$FIT_PLOT" \
  --title "SmolLM2-135M-Instruct: retro-fitting vs GPT-fitting (same tokens)"
SFT=(--mode sft --steps "$SFT_STEPS" --seq-len "$SFT_SEQ" --batch "$SFT_BATCH" --lr "$SFT_LR" --min-lr "$SFT_LR"
     --weight-decay 0.01 --eval-every 0 --save-every 25
     --data "$DATA/sft/self-instruct-human.jsonl.gz:1" --data "$DATA/sft/p3-t0-sample.jsonl.gz:1"
     --exclude-task yelp_review_full --exclude-task amazon_polarity --exclude-task imdb)
train "$OUT/retrofit-sft" --model "$OUT/retrofit" "${SFT[@]}"
train "$OUT/gptfit-sft" --model "$OUT/gptfit" "${SFT[@]}"
SFT_ONLY_DIR=
if [ -n "${SFT_ONLY:-}" ]; then
  train "$OUT/untouched-sft" --model "$SMOL" "${SFT[@]}"
  SFT_ONLY_DIR="$OUT/untouched-sft"
fi
GPTFIT_SFT="$OUT/gptfit-sft" RETRO_SFT="$OUT/retrofit-sft" SFT_ONLY="$SFT_ONLY_DIR" bash experiments/qa/run.sh
# The report links the plot by a path relative to the report's folder.
PLOT_LINK=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], os.path.dirname(sys.argv[2]) or "."))' \
  "$FIT_PLOT" "$RESULTS")
python3 experiments/instructretro/report.py --out-dir "$OUT" --qa-dir "${QA_OUT:-experiments/qa/out}" \
  --plot "$PLOT_LINK" --qa-report "$(basename "${REPORT:-docs/results-qa.md}")" ${QA_ARCHIVE:+--qa-archive "$QA_ARCHIVE"} ${NOTES:+--notes "$NOTES"} > "$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
echo "wrote $RESULTS"
