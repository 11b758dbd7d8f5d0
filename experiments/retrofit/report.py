"""Writes the results table of experiments/retrofit/run.sh as Markdown on stdout."""
import argparse, datetime, json, os, platform, subprocess

p = argparse.ArgumentParser()
for a in ["--out-dir", "--db", "--base-steps", "--steps", "--seq", "--batch", "--hidden", "--layers"]:
    p.add_argument(a, required=True)
a = p.parse_args()

def load(run, kind):
    with open(os.path.join(a.out_dir, run, f"ppl-{kind}.json")) as f:
        return json.load(f)

def tokens_per_s(run):
    rows = [json.loads(l) for l in open(os.path.join(a.out_dir, run, "metrics.jsonl")) if '"loss"' in l]
    elapsed = rows[-1]["elapsed"] if rows else float("nan")
    return sum(r["tokens"] for r in rows) / elapsed if rows else float("nan"), elapsed

cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name"))
except Exception:
    pass
db = json.load(open(os.path.join(a.db, "db.json")))
runs = [("base", "base GPT (pretrained here, no retrieval)"), ("gptfit", "GPT-fit"),
        ("retrofit", "retro-fit, decoder unfrozen, random init (reference)"),
        ("retrofit-frozen", "retro-fit, decoder frozen"), ("retrofit-zero", "retro-fit, --cca-init zero")]
print("# Results: retro-fitting vs GPT-fitting (issue 4)\n")
print(f"Produced by `experiments/retrofit/run.sh` on {datetime.date.today()} ({cpu}, {os.cpu_count()} cores). Rerun it to reproduce.\n")
print(f"- DB: {db['n_chunks']} chunks of {db['chunk_len']} tokens ({db['n_chunks_train']} train, {db['n_chunks_valid']} validation) from "
      + ", ".join(os.path.basename(c['path']) for c in db['corpora']) + ".")
print(f"- Base GPT: Llama, hidden {a.hidden}, {a.layers} layers, SmolLM2 tokenizer, pretrained {a.base_steps} steps without retrieval.")
print(f"- Each fitting run: {a.steps} steps of {a.batch} samples x {a.seq} tokens, the same samples in the same order (seed 1234), lr 3e-4 cosine to 3e-5.")
print("- Perplexity: every validation sample (held-out documents, never retrievable), neighbours filtered as in training; gate 0 = no neighbours.\n")
print("| run | val ppl, with retrieval | val ppl, gate 0 | train tokens/s | wall time |")
print("|---|---|---|---|---|")
for run, label in runs:
    r, g = load(run, "retrieval"), load(run, "gate0")
    tps, el = tokens_per_s(run)
    print(f"| {label} | {r['ppl']:.2f} | {g['ppl']:.2f} | {tps:.0f} | {el/60:.1f} min |")
print("\nLoss curves: ![loss curves](retrofit-loss.png)\n")
