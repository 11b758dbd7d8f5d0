#!/usr/bin/env python3
"""Retro training step, ours (candle, fused kernels on / off, mimalloc / glibc malloc) against PyTorch (issue 6).

A step = forward, mean next-token cross-entropy (positions 0..seq-2), backward over every parameter,
AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only, lr 1e-4) over every parameter,
on the seeded inputs of `retro bench forward` (same ids and neighbours on both sides), same threads.

Ours: `retro --threads T bench train-step` (crates/retro-cli/src/bench/train_step.rs), which reports the
best step and its forward / loss / backward / AdamW split; `RETRO_FUSED=0` selects candle's composed ops.
Torch: bench/retro_torch.py's RetroTorch (an independent implementation of the model), torch.optim.AdamW
(default foreach implementation) with the same two parameter groups; run in a child process of this
script (`--torch-worker`). Each configuration runs as a separate process, alternating, `--repeats`
rounds; each run records the load average before it and the CPU that other processes used during it
("others", 100% = one core). The first step's losses must agree across all (same model, same data).

Per-op rows: `retro bench kernels` (fused vs candle composed, forward + backward) and the same ops in
torch (`--torch-kernels` worker), on the shapes of the SmolLM2 Retro model.

Usage (from the repository root, after `cargo build --release -p retro-cli`):
    bench/.venv/bin/python bench/train_step_vs_torch.py [--threads 2] [--repeats 2] [--seq 512]
        [--sys-binary PATH (a build without the mimalloc allocator, for the allocator rows)]
        [--json-out bench/out/train_step.jsonl]
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def cpu_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    load = os.getloadavg()[0]
    busy0, child0, t0 = cpu_busy_s(), children_cpu_s(), time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    others = 100.0 * max(0.0, (cpu_busy_s() - busy0) - (children_cpu_s() - child0)) / wall
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {p.returncode}")
    return p.stdout, load, others


def json_lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip().startswith("{")]


# -- torch workers ----------------------------------------------------------------------------------
def torch_step(a):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, HERE)
    from retro_torch import RetroTorch, seeded_inputs

    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    model = RetroTorch(a.ckpt)
    model.requires_grad_(True)
    decay = [w for w in model.parameters() if w.dim() >= 2]
    no_decay = [w for w in model.parameters() if w.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    load_s = time.perf_counter() - t
    c = model.cfg
    ids, nb = seeded_inputs(a.batch, a.seq, model.d["vocab_size"], c["chunk_len"], c["num_neighbors"],
                            c["retrieved_len"], a.seed)
    rows, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model.forward(ids, nb)
        t1 = time.perf_counter()
        v = logits.shape[-1]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1))
        losses.append(loss.item())
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        del logits, loss
        opt.step()
        t4 = time.perf_counter()
        if i >= a.warmup:
            rows.append([(t4 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3])
    best = min(rows, key=lambda r: r[0])
    print(json.dumps({
        "impl": "torch", "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup": a.warmup,
        "params": sum(w.numel() for w in model.parameters()), "load_s": load_s,
        "step_ms": [r[0] for r in rows], "best_ms": best[0], "best_forward_ms": best[1], "best_loss_ms": best[2],
        "best_backward_ms": best[3], "best_adamw_ms": best[4], "losses": losses,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


def torch_kernels(a):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    k = a.kernel_shapes

    def med(f):
        f()
        ts = []
        for _ in range(a.kernel_repeats):
            t = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t) * 1e3)
        return sorted(ts)[len(ts) // 2]

    def fb(xs, f):
        def go():
            for x in xs:
                x.grad = None
            f(*xs).sum().backward()
        return go

    x = (torch.rand(k["tokens"], k["hidden"]) * 4 - 2).requires_grad_()
    w = (torch.rand(k["hidden"]) + 0.5).requires_grad_()
    rows = [(f"rmsnorm_fb_{k['tokens']}x{k['hidden']}",
             med(fb([x, w], lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w)))]
    g = (torch.rand(k["tokens"], k["intermediate"]) * 8 - 4).requires_grad_()
    u = (torch.rand(k["tokens"], k["intermediate"]) * 4 - 2).requires_grad_()
    rows.append((f"swiglu_fb_{k['tokens']}x{k['intermediate']}", med(fb([g, u], lambda g, u: F.silu(g) * u))))
    lx = (torch.rand(k["tokens"], k["hidden"]) * 2 - 1).requires_grad_()
    lw = (torch.rand(k["intermediate"], k["hidden"]) * 0.2 - 0.1).requires_grad_()
    rows.append((f"linear_fb_{k['tokens']}x{k['hidden']}x{k['intermediate']}",
                 med(fb([lx, lw], lambda x, w: F.linear(x, w)))))
    aq = (torch.rand(1, 9, k["t"], 64) * 2 - 1).requires_grad_()
    ak = (torch.rand(1, 3, k["t"], 64) * 2 - 1).requires_grad_()
    av = (torch.rand(1, 3, k["t"], 64) * 2 - 1).requires_grad_()
    rows.append((f"attention_causal_fb_9x3x{k['t']}x64",
                 med(fb([aq, ak, av], lambda q, k_, v: F.scaled_dot_product_attention(
                     q, k_, v, is_causal=True, enable_gqa=True)))))
    t = k["t"]
    mask = torch.triu(torch.full((t, t), float("-inf")), 1)
    s = (torch.rand(k["heads"], t, t) * 8 - 4).requires_grad_()
    rows.append((f"softmax_causal_fb_{k['heads']}x{t}x{t}", med(fb([s], lambda s: torch.softmax(s + mask, -1)))))
    lg = (torch.rand(k["ce_rows"], k["vocab"]) * 8 - 4).requires_grad_()
    tg = (torch.arange(k["ce_rows"]) * 7919) % k["vocab"]
    rows.append((f"cross_entropy_fb_{k['ce_rows']}x{k['vocab']}",
                 med(fb([lg], lambda l: F.cross_entropy(l, tg, reduction="sum")))))
    p = torch.nn.Parameter(torch.rand(k["adamw_params"]) * 2 - 1)
    p.grad = torch.rand(k["adamw_params"]) * 0.2 - 0.1
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    rows.append((f"adamw_step_{k['adamw_params']}", med(opt.step)))
    for op, ms in rows:
        print(json.dumps({"op": op, "torch_ms": ms}))


# -- driver -----------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="bench/out/smollm2-retro")
    ap.add_argument("--retro", default="target/release/retro")
    ap.add_argument("--sys-binary", default=None, help="a retro binary built without the mimalloc allocator")
    ap.add_argument("--before-binary", default=None,
                    help="a retro binary from before issue 6 (glibc malloc, AVX2-only gemm), run as config 'before' "
                         "with RETRO_FUSED=0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kernel-repeats", type=int, default=5)
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--configs", default="fused,composed,torch",
                    help="comma-separated: fused, composed, fused-sys, composed-sys, before, torch")
    ap.add_argument("--json-out", default="bench/out/train_step.jsonl")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-kernels", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    # SmolLM2-135M Retro shapes: 2048 encoder tokens (512 × 2 × 128 / 64 · …), hidden 576, MLP 1536,
    # vocab 49152, 9 heads × (batch 1) × 512² scores per layer (×4 heads for the softmax row).
    a.kernel_shapes = {"tokens": 2048, "hidden": 576, "intermediate": 1536, "vocab": 49152, "ce_rows": 512,
                       "heads": 36, "t": 512, "adamw_params": 10_000_000}
    if a.torch_worker:
        return torch_step(a)
    if a.torch_kernels:
        return torch_kernels(a)

    env_threads = {"RAYON_NUM_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads)}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = open(a.json_out, "a") if a.json_out else None

    def record(row):
        row.update({"date": stamp, "threads": a.threads})
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    if not a.skip_kernels:
        k = a.kernel_shapes
        shape_args = ["--tokens", str(k["tokens"]), "--hidden", str(k["hidden"]), "--intermediate",
                      str(k["intermediate"]), "--vocab", str(k["vocab"]), "--ce-rows", str(k["ce_rows"]),
                      "--heads", str(k["heads"]), "--t", str(k["t"]), "--adamw-params", str(k["adamw_params"])]
        text, load, others = run([a.retro, "--threads", str(a.threads), "bench", "kernels", "--repeats",
                                  str(a.kernel_repeats), "--json"] + shape_args, env_threads)
        ours = {r["op"]: r for r in json_lines(text)}
        text, tload, tothers = run([PY, __file__, "--torch-kernels", "--threads", str(a.threads),
                                    "--kernel-repeats", str(a.kernel_repeats)], env_threads)
        theirs = {r["op"]: r["torch_ms"] for r in json_lines(text)}
        print(f"\nPer-op, forward + backward, median of {a.kernel_repeats} (ms); ours load {load:.1f} others "
              f"{others:.0f}%, torch load {tload:.1f} others {tothers:.0f}%")
        print("| op | ours fused | candle composed | torch | fused / torch | composed / fused |")
        print("|---|---|---|---|---|---|")
        for op, r in ours.items():
            t = theirs.get(op, float("nan"))
            print(f"| {op} | {r['fused_ms']:.2f} | {r['composed_ms']:.2f} | {t:.2f} | {r['fused_ms'] / t:.2f} | "
                  f"{r['composed_ms'] / r['fused_ms']:.1f} |")
            record({"kind": "kernel", "op": op, "fused_ms": r["fused_ms"], "composed_ms": r["composed_ms"],
                    "torch_ms": t, "load": load, "others_pct": others, "torch_load": tload,
                    "torch_others_pct": tothers})

    if a.skip_steps:
        return 0
    common = ["--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--warmup",
              str(a.warmup), "--seed", str(a.seed)]
    ours_args = ["bench", "train-step", "--model", a.ckpt, "--lr", str(a.lr), "--json"] + common

    def config_cmd(name):
        if name == "torch":
            return [PY, __file__, "--torch-worker", "--ckpt", a.ckpt, "--threads", str(a.threads), "--lr",
                    str(a.lr)] + common, {}
        binary = a.before_binary if name == "before" else a.sys_binary if name.endswith("-sys") else a.retro
        if binary is None:
            raise SystemExit(f"{name} needs --sys-binary or --before-binary")
        fused = "0" if name.startswith("composed") or name == "before" else "1"
        return [binary, "--threads", str(a.threads)] + ours_args, {"RETRO_FUSED": fused}

    names = a.configs.split(",")
    results = {n: [] for n in names}
    for rep in range(a.repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            cmd, env = config_cmd(name)
            env.update(env_threads)
            text, load, others = run(cmd, env)
            r = json_lines(text)[-1]
            r.update({"config": name, "load": load, "others_pct": others, "rep": rep})
            results[name].append(r)
            record(dict(r, kind="train_step"))
            print(f"rep {rep} {name:13} best step {r['best_ms']:9.0f} ms (fwd {r['best_forward_ms']:.0f}, loss "
                  f"{r['best_loss_ms']:.0f}, bwd {r['best_backward_ms']:.0f}, adamw {r['best_adamw_ms']:.0f}) "
                  f"losses {[round(x, 5) for x in r['losses']]} load {load:.1f} others {others:.0f}%", flush=True)
    print("\n| config | best step ms | forward | loss | backward | AdamW | runs (load / others %) | / torch |")
    print("|---|---|---|---|---|---|---|---|")
    torch_best = min((r["best_ms"] for r in results.get("torch", [])), default=float("nan"))
    for name, rs in results.items():
        b = min(rs, key=lambda r: r["best_ms"])
        runs = ", ".join(f"{r['best_ms'] / 1e3:.2f} s ({r['load']:.1f} / {r['others_pct']:.0f})" for r in rs)
        print(f"| {name} | {b['best_ms']:.0f} | {b['best_forward_ms']:.0f} | {b['best_loss_ms']:.0f} | "
              f"{b['best_backward_ms']:.0f} | {b['best_adamw_ms']:.0f} | {runs} | {b['best_ms'] / torch_best:.2f} |")
    first = {n: rs[0]["losses"][0] for n, rs in results.items()}
    print(f"\nfirst-step loss per config: {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
