"""Writes the results of experiments/retrofit/run.sh as Markdown on stdout: the perplexity table, validation
perplexity during training, the train-loss difference of each retro-fit run against GPT-fit on the same batches,
and how much of the next chunk the neighbours hold (neighbour_overlap.py)."""
import argparse, datetime, json, math, os, platform, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import neighbour_overlap  # noqa: E402

p = argparse.ArgumentParser()
for a in ["--out-dir", "--db", "--base-steps", "--steps", "--seq", "--batch", "--hidden", "--layers"]:
    p.add_argument(a, required=True)
p.add_argument("--notes", help="a hand-written Markdown reading of the run, appended when the file exists")
a = p.parse_args()

RUNS = [("base", "base GPT (pretrained here, no retrieval)"), ("gptfit", "GPT-fit"),
        ("retrofit", "retro-fit, decoder unfrozen, random init (reference)"),
        ("retrofit-frozen", "retro-fit, decoder frozen"), ("retrofit-zero", "retro-fit, --cca-init zero"),
        ("retrofit-frozen-lr10", "diagnostic: retro-fit, decoder frozen, lr x10")]
RUNS = [(run, label) for run, label in RUNS if os.path.exists(os.path.join(a.out_dir, run, "ppl-gate0.json"))]


def load(run, kind):
    with open(os.path.join(a.out_dir, run, f"ppl-{kind}.json")) as f:
        return json.load(f)


def metrics(run):
    lines = [json.loads(l) for l in open(os.path.join(a.out_dir, run, "metrics.jsonl"))]
    steps = {r["step"]: r for r in lines if "loss" in r}  # a resumed run may repeat steps; the last one counts
    evals = {r["step"]: r for r in lines if "val_loss" in r}
    return [steps[s] for s in sorted(steps)], [evals[s] for s in sorted(evals)]


def peak_memory(run):
    """The training process's peak resident memory in MiB (recorded per step since 2026-11-30), or None."""
    peaks = [r["peak_rss_mib"] for r in metrics(run)[0] if "peak_rss_mib" in r]
    return max(peaks) if peaks else None


def tokens_per_s(run):
    steps, _ = metrics(run)
    if not steps:
        return float("nan"), float("nan")
    elapsed = steps[-1]["elapsed"]
    return sum(r["tokens"] for r in steps) / elapsed, elapsed


cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name"))
except Exception:
    pass
db = json.load(open(os.path.join(a.db, "db.json")))
print("# Results: retro-fitting vs GPT-fitting (issue 4)\n")
print(f"Produced by `experiments/retrofit/run.sh` on {datetime.date.today()} ({cpu}, {os.cpu_count()} cores). Rerun it to reproduce.\n")
print(f"- DB: {db['n_chunks']} chunks of {db['chunk_len']} tokens ({db['n_chunks_train']} train, {db['n_chunks_valid']} validation) from "
      + ", ".join(os.path.basename(c['path']) for c in db['corpora']) + ".")
print(f"- Base GPT: Llama, hidden {a.hidden}, {a.layers} layers, SmolLM2 tokenizer, pretrained {a.base_steps} steps without retrieval.")
print(f"- Each fitting run: {a.steps} steps of {a.batch} samples x {a.seq} tokens, the same samples in the same order (seed 1234), lr 3e-4 cosine to 3e-5.")
print("- Perplexity: every validation sample (held-out documents, never retrievable), neighbours filtered as in training; gate 0 = no neighbours.\n")
gpt = load("gptfit", "retrieval")["ppl"]
print("| run | val ppl, with retrieval | val ppl, gate 0 | with retrieval vs GPT-fit | train tokens/s | peak memory | wall time |")
print("|---|---|---|---|---|---|---|")
for run, label in RUNS:
    r, g = load(run, "retrieval"), load(run, "gate0")
    tps, el = tokens_per_s(run)
    mem = peak_memory(run)
    mem = f"{mem / 1024:.2f} GiB" if mem else "-"
    print(f"| {label} | {r['ppl']:.2f} | {g['ppl']:.2f} | {100 * (r['ppl'] / gpt - 1):+.2f}% | {tps:.0f} | {mem} | {el/60:.1f} min |")

print("\n## Validation perplexity during training\n")
print("Measured by the training loop every few steps on a fixed subset of the validation samples (with retrieval for "
      "the retro-fit runs).\n")
fits = [(run, label) for run, label in RUNS if run != "base"]
evals = {run: {e["step"]: e["val_ppl"] for e in metrics(run)[1]} for run, _ in fits}
steps = sorted(set().union(*[set(e) for e in evals.values()]))
print("| step | " + " | ".join(label for _, label in fits) + " |")
print("|---|" + "---|" * len(fits))
for s in steps:
    print(f"| {s} | " + " | ".join(f"{evals[run][s]:.2f}" if s in evals[run] else "" for run, _ in fits) + " |")

print("\n## Train loss against GPT-fit on the same batches\n")
print("Each run sees the same samples in the same order, so the per-step difference of the train loss isolates what "
      "retrieval (and freezing) changes. Negative = lower loss than GPT-fit (nats per token).\n")
gpt_loss = {r["step"]: r["loss"] for r in metrics("gptfit")[0]}
print("| run | mean difference, first third | mean difference, last third | steps below GPT-fit |")
print("|---|---|---|---|")
for run, label in fits[1:]:
    d = [(r["step"], r["loss"] - gpt_loss[r["step"]]) for r in metrics(run)[0] if r["step"] in gpt_loss]
    if not d:
        continue
    third = max(1, len(d) // 3)
    first = sum(x for _, x in d[:third]) / third
    last = sum(x for _, x in d[-third:]) / third
    below = sum(1 for _, x in d if x < 0)
    print(f"| {label} | {first:+.4f} | {last:+.4f} | {below} of {len(d)} |")

print("\n## What the neighbours hold\n")
ov = neighbour_overlap.overlap(a.db)
print(f"`python3 experiments/retrofit/neighbour_overlap.py {a.db}`: with the causal shift, chunk i's neighbours serve "
      f"the tokens of chunk i+1. The share of chunk i+1's distinct n-grams that occur in chunk i's first {ov['k']} "
      f"neighbours (each + continuation, as in training), against {ov['k']} random train chunks of other documents; "
      f"*new* = not anywhere earlier in the chunk's own document, i.e. only retrieval can supply it. "
      f"{ov['chunks']['valid']} validation chunks, {ov['chunks']['train']} sampled train chunks.\n")
print(neighbour_overlap.table(ov))
print("\nLoss curves: ![loss curves](retrofit-loss.png)\n")
if a.notes and os.path.exists(a.notes):
    print(open(a.notes).read().rstrip() + "\n")
