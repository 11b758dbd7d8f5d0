"""Writes docs/results-instructretro.md (on stdout) from experiments/instructretro/run.sh's outputs: the two fitting
runs (retro-fit and GPT-fit of SmolLM2-135M-Instruct on the same samples), their validation perplexity, the two
instruction-tuning runs, and the QA summaries that experiments/qa/run.sh wrote for their rows."""
import argparse, datetime, json, os, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "qa"))
from answers import ROWS, find_answers  # noqa: E402  (experiments/qa/answers.py)

p = argparse.ArgumentParser()
p.add_argument("--out-dir", default="experiments/instructretro/out")
p.add_argument("--qa-dir", default="experiments/qa/out")
p.add_argument("--qa-archive", help="archived QA answers (experiments/qa/archive.py) for the rows --qa-dir lacks")
p.add_argument("--sets", nargs="+", default=["nq-open-dev", "triviaqa-sm-sub"])
p.add_argument("--qa-report", default="results-qa.md", help="the QA report's file name, for the link to its details")
p.add_argument("--plot", default="instructretro-fit-loss.png", help="the fitting loss plot, relative to the report")
p.add_argument("--notes", help="a hand-written Markdown reading of the run, appended when the file exists")
a = p.parse_args()


def run_info(name):
    d = os.path.join(a.out_dir, name)
    if not os.path.exists(os.path.join(d, "run.json")):
        return None
    opts = json.load(open(os.path.join(d, "run.json")))["options"]
    steps = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"loss"' in l]
    last = steps[-10:]
    return {
        "opts": opts,
        "losses": [s["loss"] for s in steps],
        "steps": len(steps),
        "first_loss": sum(s["loss"] for s in steps[:10]) / max(1, len(steps[:10])),
        "last_loss": sum(s["loss"] for s in last) / max(1, len(last)),
        "tokens_per_s": sum(s["tokens"] for s in steps) / max(1e-9, steps[-1]["elapsed"]) if steps else 0,
        "minutes": steps[-1]["elapsed"] / 60 if steps else 0,
        # Recorded per step since 2026-11-30; a resumed run reports the peak of its sessions that recorded it.
        "peak": max((s["peak_rss_mib"] for s in steps if "peak_rss_mib" in s), default=None),
    }


def gib(mib):
    return "-" if mib is None else f"{mib / 1024:.2f} GiB"


def ppl(run, kind):
    f = os.path.join(a.out_dir, f"ppl-{run}-{kind}.json")
    return json.load(open(f)) if os.path.exists(f) else None


def qa(name, s):
    rows, _ = find_answers(f"{name}-{s}", a.qa_dir, a.qa_archive)
    if rows is None:
        return None
    n = len(rows)
    return n, 100 * sum(r["em"] for r in rows) / n, 100 * sum(r["f1"] for r in rows) / n


cpu = "unknown CPU"
try:
    cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
               .stdout.splitlines() if l.startswith("Model name"))
except Exception:
    pass

fits = {n: run_info(n) for n in ("retrofit", "gptfit")}
sfts = {n: run_info(n) for n in ("retrofit-sft", "gptfit-sft")}
print("# Results: the InstructRetro pipeline from SmolLM2-135M-Instruct (issues 4 and 5)\n")
print(f"Produced by `experiments/instructretro/run.sh` and `experiments/instructretro/report.py` on "
      f"{datetime.date.today()} ({cpu}, {os.cpu_count()} cores). Rerun them to reproduce.\n")
f = fits.get("retrofit")
if f:
    o = f["opts"]
    print(f"- Base: SmolLM2-135M-Instruct (the only pretrained GPT in shared/data). Retro-fit: encoder and CCA new "
          f"(the reference's random init), decoder unfrozen; GPT-fit: the plain decoder on the same samples in the "
          f"same order (seed {o['seed']}).")
    print(f"- Fitting: {o['steps']} steps of {o['batch']} x {o['seq_len']} tokens from the DB `{o['db']}` "
          f"(train split), lr {o['lr']:g} cosine to {o['min_lr']:g}, weight decay {o['weight_decay']:g}.")
s = sfts.get("retrofit-sft")
if s:
    o = s["opts"]
    print(f"- Instruction tuning: {o['steps']} steps of {o['batch']} x {o['seq_len']} tokens, lr {o['lr']:g}, "
          f"on " + " + ".join(f"{os.path.basename(d['path'])} (weight {d['weight']:g})" for d in o["data"])
          + (f" (without {', '.join(o['exclude_task'])})" if o["exclude_task"] else "")
          + "; loss on the last answer only, retrieval gated off.")
print()
print("## Fitting: validation perplexity on held-out documents\n")
print("| run | train loss, first 10 steps | train loss, last 10 steps | val ppl with retrieval | val ppl, gate 0 "
      "| val tokens | tokens/s | peak memory | minutes |")
print("|---|---|---|---|---|---|---|---|---|")
for name, label in (("gptfit", "GPT-fit"), ("retrofit", "retro-fit (decoder unfrozen)")):
    f = fits.get(name)
    if not f:
        continue
    r, g = ppl(name, "retrieval"), ppl(name, "gate0")
    fmt = lambda x: "-" if x is None else f"{x['ppl']:.4f}"
    print(f"| {label} | {f['first_loss']:.3f} | {f['last_loss']:.3f} | {fmt(r)} | {fmt(g)} | "
          f"{(r or g or {}).get('tokens', '-')} | {f['tokens_per_s']:.0f} | {gib(f['peak'])} | {f['minutes']:.1f} |")
if fits.get("retrofit") and fits.get("gptfit"):
    # Per step, on the same samples in the same order.
    d = [x - y for x, y in zip(fits["retrofit"]["losses"], fits["gptfit"]["losses"])]
    tail = d[-30:]
    print(f"\nTrain loss, retro-fit minus GPT-fit on the same batch (nats/token): step 1 {d[0]:+.5f}, mean of "
          f"the first 30 steps {sum(d[:30]) / len(d[:30]):+.5f}, of the last 30 {sum(tail) / len(tail):+.5f}, "
          f"{sum(x < 0 for x in d)} of {len(d)} steps lower for retro-fit. Loss curves: "
          f"![fitting loss]({a.plot})")
print()
if any(sfts.values()):
    print("## Instruction tuning\n")
    print("| run | loss, first 10 steps | loss, last 10 steps | tokens/s | peak memory | minutes |")
    print("|---|---|---|---|---|---|")
    for name, label in (("gptfit-sft", "GPT-fit-Instruct"), ("retrofit-sft", "InstructRetro")):
        s = sfts.get(name)
        if s:
            print(f"| {label} | {s['first_loss']:.3f} | {s['last_loss']:.3f} | {s['tokens_per_s']:.0f} | "
                  f"{gib(s['peak'])} | {s['minutes']:.1f} |")
    print()
# The QA report's rows with contexts in the prompt (the closed-book row is in the QA report only).
rows = [(n, label) for n, label in ROWS if not n.endswith("closed-book")]
cells = {(n, s): qa(n, s) for n, _ in rows for s in a.sets}
if any(cells.values()):
    print(f"## Zero-shot QA (top-5 contexts in the prompt; details in {a.qa_report})\n")
    print("| model | " + " | ".join(f"{s} EM | {s} F1 | n" for s in a.sets) + " |")
    print("|---|" + "---|---|---|" * len(a.sets))
    for n, label in rows:
        c = [cells[(n, s)] for s in a.sets]
        if all(x is None for x in c):
            continue
        print(f"| {label} | " + " | ".join("- | - | 0" if x is None else f"{x[1]:.1f} | {x[2]:.1f} | {x[0]}"
                                          for x in c) + " |")
    print()

if a.notes and os.path.exists(a.notes):
    print()
    print(open(a.notes).read().rstrip())
