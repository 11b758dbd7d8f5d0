#!/usr/bin/env python3
"""Retro model forward / backward and greedy decoding: ours (candle) against PyTorch (issue 3).

One run does four things, all on the CPU with the same thread count on both sides:

1. Makes a SmolLM2-based Retro checkpoint with `retro model retrofit` (default Retro layers 9..30,
   m = 64, k = 2, r = 128, random CCA init), unless it exists.
2. Cross-checks our logits against bench/retro_torch.py (an independent PyTorch implementation of
   the same model, itself checked against the numpy fixture of the tiny model) on the same seeded
   inputs with neighbours: max abs error ours vs torch float32 and float64, torch float32 vs float64.
3. Times forward (batch 4 × 512, neighbours on) and forward + mean cross-entropy + backward over all
   parameters (default batch 1 × 512: batch 4 with candle's backward needs more memory than the
   24 GiB bench machine can spare, see docs/benchmarks.md) for both, each measurement `--repeats`
   times as separate processes, alternating ours / torch; best, spread and ours/torch ratio of the
   best. Then one more torch step of each under torch.profiler (top ops by self CPU time).
4. Greedy decode tokens/s of the plain decoder (64 new tokens), and of the Retro model with retrieval
   (`--retro-max-new`, default 128; ours retrieving from `--db` at every chunk against bench/retro_torch.py's
   `decode`, the reference's loop that re-forwards the whole sequence per step): ours via
   `retro generate --model GPT --prompt P --max-new 64 --json --no-retrieval` timed as a process
   minus the same with --max-new 1 (load and prompt cancel out), and in-process via
   `retro bench decode`; HF transformers `LlamaForCausalLM` built from our checkpoint's
   config["decoder"] with its decoder tensors (the same f32 values), `generate` 64 minus 1 tokens.

Every measurement records the load average before it and the CPU that other processes used during
it ("others", 100% = one core: busy time from /proc/stat minus the child's own CPU time); the
summary also gives the best of the quiet runs (others <= --quiet-pct, default 25%). With
--wait-quiet S each measurement first waits up to S seconds for a quiet 5-s window.

Usage (from the repository root, after `cargo build --release -p retro-cli`):
    bench/.venv/bin/python bench/retro_forward_vs_torch.py [--threads 2] [--repeats 3]
        [--backward-batch 1] [--skip-decode] [--json-out bench/out/results.jsonl]
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORCH_SCRIPT = os.path.join("bench", "retro_torch.py")
PY = sys.executable


def cpu_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


WAIT_QUIET = {"max_s": 0.0, "pct": 25.0}


def wait_quiet():
    """Waits (up to WAIT_QUIET["max_s"] seconds) until the CPU used by all processes over 5 s is at
    most WAIT_QUIET["pct"] (100 = one core); returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WAIT_QUIET["max_s"]:
        b0 = cpu_busy_s()
        time.sleep(5)
        if 100.0 * (cpu_busy_s() - b0) / 5 <= WAIT_QUIET["pct"]:
            break
    return time.perf_counter() - t0


def run(cmd, env=None):
    """Runs cmd; returns (stdout, stderr, wall seconds, load average before, others' CPU %)."""
    wait_quiet()
    load = os.getloadavg()[0]
    busy0, child0, t0 = cpu_busy_s(), children_cpu_s(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    others = 100.0 * max(0.0, (cpu_busy_s() - busy0) - (children_cpu_s() - child0)) / wall
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {p.returncode}")
    return p.stdout, p.stderr, wall, load, others


def last_json(text):
    lines = [l for l in text.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON object in:\n{text}")
    return json.loads(lines[-1])


def fwd_args(a, batch, backward, steps, warmup):
    out = ["--model", a.ckpt, "--batch", str(batch), "--seq", str(a.seq), "--steps", str(steps),
           "--warmup", str(warmup), "--seed", str(a.seed), "--json"]
    return out + (["--backward"] if backward else [])


def ours_forward(a, batch, backward, extra=()):
    cmd = [a.retro, "--threads", str(a.threads), "bench", "forward"] + fwd_args(a, batch, backward, a.steps, a.warmup)
    return cmd + list(extra)


def torch_forward(a, batch, backward, extra=(), steps=None, warmup=None):
    steps = a.steps if steps is None else steps
    warmup = a.warmup if warmup is None else warmup
    cmd = [PY, TORCH_SCRIPT, "forward", "--threads", str(a.threads)] + fwd_args(a, batch, backward, steps, warmup)
    return cmd + list(extra)


def spread(xs):
    return (max(xs) - min(xs)) / min(xs) if xs else float("nan")


def cross_check(a, results):
    b, ns = a.check_batch, a.check_seq
    out = os.path.join("bench", "out")
    f_ours, f_t32, f_t64 = (os.path.join(out, f"logits-{n}.npy") for n in ("ours", "torch32", "torch64"))
    extra = ["--batch", str(b), "--seq", str(ns), "--steps", "1", "--warmup", "0"]
    base = ["--model", a.ckpt, "--seed", str(a.seed), "--json"]
    run([a.retro, "--threads", str(a.threads), "bench", "forward"] + base + extra + ["--dump-logits", f_ours])
    run([PY, TORCH_SCRIPT, "forward", "--threads", str(a.threads)] + base + extra + ["--dump-logits", f_t32])
    run([PY, TORCH_SCRIPT, "forward", "--threads", str(a.threads), "--dtype", "float64"] + base + extra
        + ["--dump-logits", f_t64])
    ours, t32, t64 = (np.load(f).astype(np.float64) for f in (f_ours, f_t32, f_t64))
    # The float64 run is rounded to float32 when dumped; that rounding (< 4e-6 here) is far below the errors.
    r = {"batch": b, "seq": ns, "max_abs_logit": float(np.abs(t64).max()),
         "ours_vs_torch32": float(np.abs(ours - t32).max()),
         "ours_vs_torch64": float(np.abs(ours - t64).max()),
         "torch32_vs_torch64": float(np.abs(t32 - t64).max()),
         "argmax_agree_ours_torch64": float((ours.argmax(-1) == t64.argmax(-1)).mean())}
    for f in (f_ours, f_t32, f_t64):
        os.remove(f)
    print(f"\n== 2. logits cross-check, batch {b} x {ns} tokens with neighbours (max |logit| {r['max_abs_logit']:.1f})")
    print(f"   max |ours - torch f32| = {r['ours_vs_torch32']:.2e}")
    print(f"   max |ours - torch f64| = {r['ours_vs_torch64']:.2e}")
    print(f"   max |torch f32 - torch f64| = {r['torch32_vs_torch64']:.2e}")
    print(f"   argmax agreement ours / torch f64: {r['argmax_agree_ours_torch64']:.4f}")
    results["cross_check"] = r


def timing(a, results):
    cases = [("forward", a.batch, False), ("forward+backward", a.backward_batch, True)]
    results["timing"] = []
    for name, batch, backward in cases:
        rows = {"ours": [], "torch": []}
        for rep in range(a.repeats):
            for side in ("ours", "torch"):
                cmd = ours_forward(a, batch, backward) if side == "ours" else torch_forward(a, batch, backward)
                out, _, wall, load, others = run(cmd)
                rep_json = last_json(out)
                rows[side].append({"best_ms": rep_json["best_ms"], "step_ms": rep_json["step_ms"],
                                   "load_avg_before": load, "others_cpu_pct": others, "wall_s": wall,
                                   "loss": rep_json.get("loss"),
                                   "params_with_grad": rep_json.get("params_with_grad"),
                                   "params": rep_json.get("params")})
                print(f"   {name:17} batch {batch} rep {rep + 1} {side:5}: {rep_json['best_ms'] / 1e3:7.2f} s per step "
                      f"(load avg before {load:.2f}, others {others:.0f}%)", flush=True)
        best = {s: min(r["best_ms"] for r in rows[s]) for s in rows}
        quiet = {s: [r["best_ms"] for r in rows[s] if r["others_cpu_pct"] <= a.quiet_pct] for s in rows}
        entry = {"case": name, "batch": batch, "seq": a.seq, "runs": rows,
                 "ours_best_ms": best["ours"], "torch_best_ms": best["torch"],
                 "ours_spread": spread([r["best_ms"] for r in rows["ours"]]),
                 "torch_spread": spread([r["best_ms"] for r in rows["torch"]]),
                 "ratio_ours_over_torch": best["ours"] / best["torch"],
                 "quiet_ours_best_ms": min(quiet["ours"], default=None),
                 "quiet_torch_best_ms": min(quiet["torch"], default=None),
                 "cmd_ours": shown(ours_forward(a, batch, backward)),
                 "cmd_torch": shown(torch_forward(a, batch, backward))}
        results["timing"].append(entry)
        print(f"== 3. {name}, batch {batch} x {a.seq}: ours best {best['ours'] / 1e3:.2f} s "
              f"(spread {entry['ours_spread']:.0%}), torch best {best['torch'] / 1e3:.2f} s "
              f"(spread {entry['torch_spread']:.0%}), ours/torch {entry['ratio_ours_over_torch']:.2f}", flush=True)
        if quiet["ours"] and quiet["torch"]:
            print(f"   quiet runs only (others <= {a.quiet_pct:.0f}%): ours {min(quiet['ours']) / 1e3:.2f} s, "
                  f"torch {min(quiet['torch']) / 1e3:.2f} s, ours/torch {min(quiet['ours']) / min(quiet['torch']):.2f}")
        else:
            print(f"   no quiet pair (others <= {a.quiet_pct:.0f}%): {len(quiet['ours'])} ours, {len(quiet['torch'])} torch")
        if backward:
            o, t = rows["ours"][0], rows["torch"][0]
            print(f"   loss ours {o['loss']:.5f}, torch {t['loss']:.5f}; gradients for "
                  f"{o['params_with_grad']}/{o['params']} (ours), {t['params_with_grad']}/{t['params']} (torch) tensors")
    if a.profile:
        results["profile"] = {}
        for name, batch, backward in cases:
            _, err, _, load, others = run(torch_forward(a, batch, backward, ["--profile", "--profile-rows",
                                                                              str(a.profile_rows)], 0, 0))
            print(f"\n== 3. torch.profiler, one {name} step, batch {batch} x {a.seq} "
                  f"(load avg before {load:.2f}, others {others:.0f}%), top ops by self CPU time:")
            table = err[err.find("---"):]
            print(table)
            results["profile"][name] = table


def shown(cmd):
    return " ".join(os.path.relpath(c) if os.path.isabs(c) else c for c in cmd)


def decode(a, results):
    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(os.path.join(a.gpt, "tokenizer.json")).encode(a.prompt, add_special_tokens=False).ids
    r = {"prompt": a.prompt, "prompt_len": len(ids), "max_new": a.max_new}
    # Ours, as a process: generate N and 1 tokens; the difference is N-1 decode steps.
    gen = lambda n: [a.retro, "--threads", str(a.threads), "generate", "--model", a.gpt, "--prompt", a.prompt,
                     "--max-new", str(n), "--json", "--no-retrieval"]
    walls = {a.max_new: [], 1: []}
    tokens = None
    for rep in range(a.repeats):
        for n in (a.max_new, 1):
            out, _, wall, load, others = run(gen(n))
            walls[n].append(wall)
            if n == a.max_new:
                tokens = json.loads(out)["tokens"]
                print(f"   ours generate rep {rep + 1}: {len(tokens)} tokens {wall:.2f} s "
                      f"(load avg before {load:.2f}, others {others:.0f}%)", flush=True)
            else:
                print(f"   ours generate rep {rep + 1}: 1 token {wall:.2f} s", flush=True)
    n_ours = len(tokens)
    proc_s = min(walls[a.max_new]) - min(walls[1])
    r["ours_generate"] = {"cmd": shown(gen(a.max_new)), "new_tokens": n_ours, "wall_s": walls[a.max_new],
                          "wall_1_s": walls[1], "tokens_per_s": (n_ours - 1) / proc_s}
    # Ours in-process (no stop tokens, load excluded).
    cmd = [a.retro, "--threads", str(a.threads), "bench", "decode", "--model", a.gpt, "--prompt-ids",
           ",".join(map(str, ids)), "--max-new", str(a.max_new), "--repeats", str(a.repeats), "--json"]
    out, _, _, load, others = run(cmd)
    bd = last_json(out)
    cmd1 = cmd[:cmd.index("--max-new") + 1] + ["1"] + cmd[cmd.index("--max-new") + 2:]
    bd1 = last_json(run(cmd1)[0])
    r["ours_bench_decode"] = {"cmd": shown(cmd[:8]) + " IDS " + shown(cmd[9:]), "seconds": bd["seconds"],
                              "seconds_1": bd1["seconds"],
                              "tokens_per_s": (bd["new_tokens"] - 1) / (bd["best_s"] - bd1["best_s"]),
                              "load_avg_before": load, "others_cpu_pct": others,
                              "same_tokens_as_generate": bd["tokens"][:n_ours] == tokens}
    # HF transformers on the same f32 decoder tensors.
    hf = hf_decode(a, ids, n_ours)
    hf["same_tokens_as_ours"] = hf.pop("tokens") == tokens
    r["hf"] = hf
    r["ratio_ours_generate_over_hf"] = r["ours_generate"]["tokens_per_s"] / hf["tokens_per_s"]
    r["ratio_ours_bench_decode_over_hf"] = r["ours_bench_decode"]["tokens_per_s"] / hf["tokens_per_s"]
    results["decode"] = r
    print(f"== 4. greedy decode, prompt {len(ids)} tokens, {n_ours} new (tokens/s over the {n_ours - 1} steps after the first):")
    print(f"   ours `retro generate` (process, best {a.max_new} minus best 1): {r['ours_generate']['tokens_per_s']:.1f} tokens/s")
    print(f"   ours `retro bench decode` (in process): {r['ours_bench_decode']['tokens_per_s']:.1f} tokens/s "
          f"(same tokens: {r['ours_bench_decode']['same_tokens_as_generate']})")
    print(f"   HF LlamaForCausalLM.generate: {hf['tokens_per_s']:.1f} tokens/s (same tokens as ours: {hf['same_tokens_as_ours']})")
    print(f"   ratios ours/HF: generate {r['ratio_ours_generate_over_hf']:.2f}, bench decode {r['ratio_ours_bench_decode_over_hf']:.2f}")
    if a.skip_retro_decode or not os.path.isdir(a.db):
        print(f"   (Retro decoding with retrieval skipped: {'--skip-retro-decode' if a.skip_retro_decode else a.db + ' is missing'})")
        return
    retro_decode(a, ids, r)


def retro_decode(a, ids, r):
    """The Retro model decoding with retrieval: ours retrieves from the DB at every chunk (KV cache, CCA keys and
    values cached per chunk); the reference's loop re-forwards the whole sequence at every step with one neighbour
    array repeated for every chunk (bench/retro_torch.py decode). Both: N tokens / best total time."""
    n = a.retro_max_new
    cmd = [a.retro, "--threads", str(a.threads), "bench", "decode", "--model", a.ckpt, "--db", a.db, "--prompt-ids",
           ",".join(map(str, ids)), "--max-new", str(n), "--repeats", str(a.repeats), "--json"]
    out, _, _, load, others = run(cmd)
    ours = last_json(out)
    ours["tokens_per_s"] = ours["new_tokens"] / ours["best_with_s"]
    ours.update(cmd=shown(cmd[:10]) + " IDS " + shown(cmd[11:]), load_avg_before=load, others_cpu_pct=others)
    tcmd = [PY, TORCH_SCRIPT, "decode", "--model", a.ckpt, "--prompt-ids", ",".join(map(str, ids)), "--max-new",
            str(n), "--repeats", str(min(a.repeats, 2)), "--threads", str(a.threads), "--json"]
    out, _, _, load, others = run(tcmd)
    ref = last_json(out)
    ref.update(cmd=shown(tcmd), load_avg_before=load, others_cpu_pct=others)
    qcmd = cmd[:-1] + ["--decode-weights", "q8_0", "--json"]
    out, _, _, load, others = run(qcmd)
    q8 = last_json(out)
    q8["tokens_per_s"] = q8["new_tokens"] / q8["best_with_s"]
    q8.update(load_avg_before=load, others_cpu_pct=others, same_tokens_as_f32=q8["tokens"] == ours["tokens"])
    r["retro"] = {"ours": ours, "ours_q8_0": q8, "torch_reference_loop": ref,
                  "ratio_ours_q8_0_over_hf_plain": q8["tokens_per_s"] / r["hf"]["tokens_per_s"],
                  "ratio_ours_over_torch_reference": ours["tokens_per_s"] / ref["tokens_per_s_total"],
                  "ratio_ours_over_hf_plain": ours["tokens_per_s"] / r["hf"]["tokens_per_s"]}
    print(f"== 4b. Retro decoding with retrieval, {n} tokens (tokens/s = {n} / best total time):")
    print(f"   ours `retro bench decode --db` ({ours['retrievals']} retrievals): {ours['tokens_per_s']:.1f} tokens/s; "
          f"embedding + search + encoder {100 * ours['retrieval_share']:.1f}% of the time, "
          f"everything retrieval adds {100 * ours['retrieval_cost_share']:.1f}%")
    print(f"   ours with --decode-weights q8_0 (decoder matrices rounded to Q8_0 for one-row products): "
          f"{q8['tokens_per_s']:.1f} tokens/s (same tokens as f32: {q8['same_tokens_as_f32']})")
    print(f"   PyTorch, the reference's loop (full re-forward per step): {ref['tokens_per_s_total']:.1f} tokens/s")
    print(f"   ratios: ours / reference loop {r['retro']['ratio_ours_over_torch_reference']:.1f}, "
          f"ours Retro / HF plain decoder {r['retro']['ratio_ours_over_hf_plain']:.2f} "
          f"(q8_0: {r['retro']['ratio_ours_q8_0_over_hf_plain']:.2f})")


def hf_decode(a, ids, n_new):
    """Runs in a child process so that its threads and memory do not linger here."""
    code = r'''
import json, sys, time, os
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
ckpt, threads, ids, n, repeats = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
cfg = json.load(open(os.path.join(ckpt, "config.json")))["decoder"]
model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
w = load_file(os.path.join(ckpt, "model.safetensors"))
sd = {k: v for k, v in w.items() if k in model.state_dict()}
missing = [k for k in model.state_dict() if k not in sd and k != "lm_head.weight"]
assert not missing, missing
model.load_state_dict(sd, strict=False)
model.tie_weights()
assert torch.equal(model.lm_head.weight, w["model.embed_tokens.weight"])
x = torch.tensor([ids])
def gen(k):
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(x, max_new_tokens=k, min_new_tokens=k, do_sample=False, pad_token_id=2)
    return time.perf_counter() - t, out[0, len(ids):].tolist()
gen(4)
tn = []; t1 = []
for _ in range(repeats):
    s, toks = gen(n); tn.append(s)
    t1.append(gen(1)[0])
print(json.dumps({"seconds": tn, "seconds_1": t1, "tokens": toks, "attn": model.config._attn_implementation,
                  "transformers": __import__("transformers").__version__,
                  "tokens_per_s": (n - 1) / (min(tn) - min(t1))}))
'''
    out, _, _, load, others = run([PY, "-c", code, a.ckpt, str(a.threads), json.dumps(ids), str(n_new), str(a.repeats)],
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                       "TOKENIZERS_PARALLELISM": "false"})
    r = last_json(out)
    r.update(load_avg_before=load, others_cpu_pct=others)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--retro", default=os.path.join("target", "release", "retro"))
    ap.add_argument("--gpt", default=os.path.join("..", "shared", "data", "models", "smollm2-135m-instruct"))
    ap.add_argument("--ckpt", default=os.path.join("bench", "out", "smollm2-retro"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--backward-batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps per process before them")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet-pct", type=float, default=25.0,
                    help="a run is quiet when other processes used at most this much CPU (100 = one core)")
    ap.add_argument("--check-batch", type=int, default=2)
    ap.add_argument("--check-seq", type=int, default=200, help="not a multiple of m: exercises the short first chunk")
    ap.add_argument("--prompt", default="The Eiffel Tower is located in")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--profile-rows", type=int, default=12)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-retro-decode", action="store_true")
    ap.add_argument("--db", default=os.path.join("demo-out", "wiki-db"),
                    help="retrieval DB for the Retro decoding row (the demo's; skipped when missing)")
    ap.add_argument("--retro-max-new", type=int, default=128)
    ap.add_argument("--json-out", default=os.path.join("bench", "out", "results.jsonl"))
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each measurement wait up to S seconds for a 5-s window with at most "
                         "--quiet-pct CPU in use (0: do not wait)")
    a = ap.parse_args()
    WAIT_QUIET.update(max_s=a.wait_quiet, pct=a.quiet_pct)
    os.chdir(ROOT)
    os.makedirs(os.path.join("bench", "out"), exist_ok=True)
    results = {"bench": "retro_forward_vs_torch", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%F"),
               "utc_start": datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M"), "threads": a.threads,
               "retro_binary_mtime_utc": datetime.datetime.fromtimestamp(
                   os.path.getmtime(a.retro), datetime.timezone.utc).strftime("%F %H:%M")}
    import torch
    results["torch"] = torch.__version__
    if not os.path.exists(os.path.join(a.ckpt, "model.safetensors")):
        cmd = [a.retro, "model", "retrofit", "--from", a.gpt, "--out", a.ckpt]
        print("== 1.", shown(cmd), flush=True)
        run(cmd)
    else:
        print(f"== 1. using the existing checkpoint {a.ckpt} (delete it to retrofit again)")
    if not a.skip_check:
        cross_check(a, results)
    if not a.skip_timing:
        print(f"\n== 3. timing, {a.threads} threads, {a.repeats} repeats, {a.warmup} warm-up + {a.steps} timed step(s) per process")
        timing(a, results)
    if not a.skip_decode:
        print(f"\n== 4. greedy decode, {a.threads} threads")
        decode(a, results)
    results.pop("profile", None)  # printed above; too long for the JSON line
    line = json.dumps(results)
    print("\n" + line)
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
