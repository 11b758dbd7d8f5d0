"""Writes the table of experiments/qa/run.sh as Markdown on stdout."""
import argparse, datetime, json, os, subprocess

from answers import ROWS, answer_in_contexts, find_answers

p = argparse.ArgumentParser()
p.add_argument("--out-dir", required=True)
p.add_argument("--db", required=True)
p.add_argument("--limit", required=True)
p.add_argument("--contexts", required=True)
p.add_argument("--sets", nargs="+", required=True)
p.add_argument("--notes", help="a hand-written Markdown reading of the run, appended when the file exists")
p.add_argument("--archive", help="archived answers (archive.py) for the rows --out-dir lacks")
a = p.parse_args()

tasks = {}  # set -> the task its results were answered as (their "task" field; short before there were tasks)

sources = []  # the files the table was read from


def summary(name, s):
    results, path = find_answers(f"{name}-{s}", a.out_dir, a.archive)
    if results is None:
        return None
    sources.append(path)
    n = len(results)
    tasks.setdefault(s, results[0].get("task", "short"))
    # Retrieval recall: a gold answer occurs (case-insensitively) in the prompt's contexts (meaningless for True/False).
    found = [answer_in_contexts(r) for r in results]
    with_contexts = any(f is not None for f in found)
    return (n, 100 * sum(r["em"] for r in results) / n, 100 * sum(r["f1"] for r in results) / n,
            100 * sum(bool(f) for f in found) / n if with_contexts else None)

cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name"))
except Exception:
    pass
db = json.load(open(os.path.join(a.db, "db.json")))
print("# Results: zero-shot QA with retrieved contexts (issue 5)\n")
print(f"Produced by `experiments/qa/run.sh` on {datetime.date.today()} ({cpu}, {os.cpu_count()} cores), "
      f"LIMIT={a.limit}, CONTEXTS={a.contexts}. Rerun it to reproduce.\n")
print(f"- Contexts: the top {a.contexts} chunks (+ continuation, 128 tokens) of a DB of {db['n_chunks']} chunks from "
      + ", ".join(os.path.basename(c['path']) for c in db['corpora'])
      + ", searched with MiniLM; prompt: the reference's template for each set's task (the model's own chat template "
      "around it).")
print("- Greedy answers of at most 64 tokens cut at EOS (and at a newline for short and True/False answers); SQuAD EM "
      "and F1 (max over gold answers), in %; for a True/False (boolq) set both are its accuracy.")
table = []
head = "| model | " + " | ".join(f"{s} EM | {s} F1 | answer in contexts | n" for s in a.sets) + " |"
table.append(head)
table.append("|---|" + "---|---|---|---|" * len(a.sets))
for name, label in ROWS:
    cells = [summary(name, s) for s in a.sets]
    if all(c is None for c in cells):
        continue
    def cell(c):
        if c is None:
            return "- | - | - | 0"
        recall = "-" if c[3] is None else f"{c[3]:.0f}%"
        return f"{c[1]:.1f} | {c[2]:.1f} | {recall} | {c[0]}"
    table.append(f"| {label} | " + " | ".join(cell(c) for c in cells) + " |")
print("- Tasks: " + ", ".join(f"{s} {tasks.get(s, '-')}" for s in a.sets) + " (`retro eval qa --task`).\n")
print("\n".join(table))
print("\n*answer in contexts*: questions whose retrieved contexts contain a gold answer string (retrieval recall).")

gold = [(m, summary(f"smollm2-instruct-{m}", "nq-openbook-short")) for m in ("gold", "closed")]
if all(c is not None for _, c in gold):
    print("\nThe reader alone: NQ questions of nq-openbook-short with their gold Wikipedia paragraph as the only context,")
    print("against no context (SmolLM2-135M-Instruct):\n")
    print("| prompt | EM | F1 | n |")
    print("|---|---|---|---|")
    for m, c in gold:
        print(f"| {'gold paragraph' if m == 'gold' else 'no context'} | {c[1]:.1f} | {c[2]:.1f} | {c[0]} |")

if a.archive and any(src.endswith(".gz") for src in sources):
    print(f"\nRows read from the archived answers in `{a.archive}` (experiments/qa/archive.py): "
          + ", ".join(f"`{os.path.basename(src)}`" for src in sources if src.endswith(".gz")) + ".")

if a.notes and os.path.exists(a.notes):
    print()
    print(open(a.notes).read().rstrip())
