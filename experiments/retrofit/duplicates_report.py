"""Writes the result of experiments/retrofit/duplicates.sh (a corpus indexed twice, so that neighbours continue the
text) as Markdown on stdout: perplexity of GPT-fit and retro-fit with retrieval and at gate 0 on both splits, the
training loss of the two on the same batches, and how much of the next chunk the neighbours hold."""
import argparse, datetime, json, os, platform, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import neighbour_overlap  # noqa: E402

p = argparse.ArgumentParser()
for a in ["--out-dir", "--db", "--base", "--docs", "--steps", "--seq", "--batch", "--plot"]:
    p.add_argument(a, required=True)
p.add_argument("--notes", help="a hand-written Markdown reading, appended when the file exists")
a = p.parse_args()
out = a.out_dir


def load(path):
    with open(path) as f:
        return json.load(f)


def losses(run):
    with open(os.path.join(out, run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r and "val_loss" not in r}


db = load(os.path.join(a.db, "db.json"))
print("# Sanity check: retro-fitting when the neighbours continue the text\n")
print(f"Generated {datetime.date.today()} by `experiments/retrofit/duplicates.sh` on {platform.machine()} "
      f"({os.cpu_count()} cores). Issue 4's experiment ([results.md](results.md)) found retro-fitting no better than "
      "GPT-fitting and traced it to neighbours that hold almost nothing of the next chunk. This run asks whether our "
      "encoder and chunked cross-attention can use neighbours that do: the first "
      f"{a.docs} Wikipedia documents are indexed twice, the copy under other document ids, so the nearest neighbour "
      "of a chunk from another document is its own copy, whose continuation is the next chunk.\n")
print(f"DB: {db['n_documents']} documents, {db['n_chunks_train']} train / {db['n_chunks_valid']} validation chunks "
      f"(a held-out document's copy has another id, so it is usually in the train split and retrievable). "
      f"From the base GPT `{a.base}`, the runs below for {a.steps} steps of {a.batch} x {a.seq} tokens on the same "
      "samples, with run.sh's schedule (lr 3e-4 to 3e-5) unless their name says otherwise (explained under the "
      "table).\n")

print("## Perplexity\n")
print("Validation: all validation samples; train: the split's first 128 samples (in DB order, some seen in "
      "training).\n")
runs = [r for r in ("gptfit", "retrofit", "retrofit-frozen-lr10", "retrofit-std",
                                          "retrofit-frozen-lr10-std", "retrofit-frozen-lr10-std-rope") if os.path.isdir(os.path.join(out, r))]
print("| run | valid, retrieval | valid, gate 0 | train, retrieval | train, gate 0 |")
print("|---|---|---|---|---|")
for run in runs:
    cells = []
    for split in ("valid", "train"):
        for r in ("retrieval", "gate0"):
            cells.append(f"{load(os.path.join(out, run, f'ppl-{split}-{r}.json'))['ppl']:.2f}")
    print(f"| {run} | " + " | ".join(cells) + " |")
print()
print("retrofit-frozen-lr10 is run.sh's diagnostic: the decoder frozen, only the encoder and CCA train, at ten times "
      "the learning rate (3e-3 to 3e-4). retrofit-std is retrofit with the new weights drawn at std 1/sqrt(hidden) "
      "instead of the reference's 0.02; retrofit-frozen-lr10-std both; retrofit-frozen-lr10-std-rope adds rotary "
      "positions in the encoder (`--encoder-rope`, not in the reference).\n")

print("## Training loss on the same batches\n")
all_losses = {r: losses(r) for r in runs}
steps = sorted(set.intersection(*[set(l) for l in all_losses.values()]))
third = max(len(steps) // 3, 1)
parts = [(name, part) for name, part in (("first third", steps[:third]), ("middle third", steps[third:2 * third]),
                                         ("last third", steps[2 * third:])) if part]
gpt = all_losses.get("gptfit")
others = [r for r in runs if r != "gptfit"]
if gpt:
    print("| steps | GPT-fit | " + " | ".join(f"{r} - GPT-fit" for r in others) + " |")
else:
    print("| steps | " + " | ".join(others) + " |")
print("|---|" + "---|" * (len(others) + (1 if gpt else 0)))
for name, part in parts:
    mean = {r: sum(all_losses[r][s] for s in part) / len(part) for r in runs}
    if gpt:
        cells = [f"{mean['gptfit']:.4f}"] + [f"{mean[r] - mean['gptfit']:+.4f}" for r in others]
    else:
        cells = [f"{mean[r]:.4f}" for r in others]
    print(f"| {name} ({part[0]}-{part[-1]}) | " + " | ".join(cells) + " |")
print(f"\nEvery loss curve: [{a.plot}]({a.plot}).\n")

print("## What the neighbours hold\n")
print("`neighbour_overlap.py` on this DB (compare the table in results.md, where 0.4-0.5% of the next chunk's "
      "4-grams are new in the neighbours):\n")
print(neighbour_overlap.table(load(os.path.join(out, "overlap.json"))))

if a.notes and os.path.exists(a.notes):
    print()
    print(open(a.notes).read().rstrip())
