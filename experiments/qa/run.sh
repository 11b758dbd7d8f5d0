#!/usr/bin/env bash
# Zero-shot QA (issue 5; shared reference §5): EM / F1 on NQ-open and TriviaQA (by default) with contexts retrieved from a
# Wikipedia DB in the prompt, for each model row below. Writes experiments/qa/out/ and docs/results-qa.md.
# Resumable: every answer is appended to out/NAME-SET.jsonl as it is made, and a rerun skips what is there.
#
# Rows: SmolLM2-135M-Instruct untouched, with RAG and closed-book; and, when given, the instruction-tuned models of
# the training experiment:
#   GPTFIT_SFT=DIR   the GPT-fitted model after `retro train --mode sft`     -> GPT-fit-Instruct with RAG
#   RETRO_SFT=DIR    the retro-fitted model after `retro train --mode sft`   -> InstructRetro, encoder off and on
#   SFT_ONLY=DIR     the untouched model after the same SFT, no fitting     -> SmolLM2-Instruct + SFT only, RAG
#                    (the ablation that tells fitting's effect on QA from SFT's)
# Sizes from the environment: LIMIT questions per set (default 1000), CONTEXTS per question (default 5),
# SETS (default "nq-open-dev triviaqa-sm-sub"; any file of shared/data/qa, e.g. boolq-dev (True/False, accuracy) or
# quac-sample (multi-turn): each is prompted and scored by the task its name gives, see `retro eval qa --task`),
# DB (default demo-out/wiki-db, built as the demo builds it), THREADS;
# QA_OUT and REPORT move the outputs (for smoke runs); QA_NOTES=FILE appends a hand-written reading of the run
# (experiments/qa/notes.md is the one for the run in docs/results-qa.md). QA_ARCHIVE=DIR keeps a slim copy of every
# row's answers there (experiments/qa/archive.py; committed, e.g. experiments/qa/answers/n1000) and fills the
# report's missing rows from it, so that a table can be completed row by row over several runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
OUT=${QA_OUT:-experiments/qa/out}
REPORT=${REPORT:-docs/results-qa.md}
LIMIT=${LIMIT:-1000}
CONTEXTS=${CONTEXTS:-5}
SETS=${SETS:-nq-open-dev triviaqa-sm-sub}
DB=${DB:-demo-out/wiki-db}
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
# Finished stages are skipped, so this is quick when the DB is already built.
bash scripts/wiki-db.sh "$DATA" "$DB" "${THREADS_FLAG[@]}" > /dev/null

# A row the archive already holds in full, from the same weights and settings, is not answered again.
archived() { # NAME-SET MODEL ENCODER CONTEXTS SET
  [ -n "${QA_ARCHIVE:-}" ] && python3 experiments/qa/archive.py --archive "$QA_ARCHIVE" --done "$1" --model "$2" \
    --limit "$LIMIT" --encoder "$3" --contexts "$4" --data "$DATA/qa/$5.jsonl.gz" && echo "== $1: in $QA_ARCHIVE already"
}
answer() { # NAME MODEL ENCODER CONTEXTS SET
  archived "$1-$5" "$2" "$3" "$4" "$5" && return
  echo "== $1 on $5"
  $RETRO "${THREADS_FLAG[@]}" eval qa --model "$2" --db "$DB" --data "$DATA/qa/$5.jsonl.gz" \
    --encoder "$3" --contexts "$4" --limit "$LIMIT" --out "$OUT/$1-$5.jsonl" --json > "$OUT/$1-$5.json"
  cat "$OUT/$1-$5.json"
}
SMOL=$DATA/models/smollm2-135m-instruct
for set in $SETS; do
  answer smollm2-instruct-rag "$SMOL" off "$CONTEXTS" "$set"
  answer smollm2-instruct-closed-book "$SMOL" off 0 "$set"
done
# The reader alone: NQ questions with their gold paragraph in the prompt, against none.
for mode in gold closed; do
  flags=(--contexts 0); [ "$mode" = gold ] && flags+=(--gold-context)
  archived "smollm2-instruct-$mode-nq-openbook-short" "$SMOL" off 0 nq-openbook-short && continue
  echo "== smollm2-instruct-$mode on nq-openbook-short"
  $RETRO "${THREADS_FLAG[@]}" eval qa --model "$SMOL" --data "$DATA/qa/nq-openbook-short.jsonl.gz" "${flags[@]}" \
    --limit "$LIMIT" --out "$OUT/smollm2-instruct-$mode-nq-openbook-short.jsonl" --json
done
# Set by set, so that a run stopped half-way has compared every fitted model on the first set.
for set in $SETS; do
  if [ -n "${GPTFIT_SFT:-}" ]; then answer gptfit-instruct-rag "$GPTFIT_SFT" off "$CONTEXTS" "$set"; fi
  if [ -n "${RETRO_SFT:-}" ]; then
    answer instructretro-encoder-off "$RETRO_SFT" off "$CONTEXTS" "$set"
    answer instructretro-encoder-on "$RETRO_SFT" on "$CONTEXTS" "$set"
  fi
  if [ -n "${SFT_ONLY:-}" ]; then answer sft-only-rag "$SFT_ONLY" off "$CONTEXTS" "$set"; fi
done
if [ -n "${QA_ARCHIVE:-}" ]; then python3 experiments/qa/archive.py --out-dir "$OUT" --archive "$QA_ARCHIVE"; fi
python3 experiments/qa/report.py --out-dir "$OUT" --db "$DB" --limit "$LIMIT" --contexts "$CONTEXTS" \
  --sets $SETS ${QA_NOTES:+--notes "$QA_NOTES"} ${QA_ARCHIVE:+--archive "$QA_ARCHIVE"} > "$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"
echo "wrote $REPORT"
