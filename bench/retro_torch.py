#!/usr/bin/env python3
"""An independent PyTorch forward (and backward) of our Retro model, for the benchmarks of issue 3.

Reads OUR checkpoint directory (`config.json` with the decoder's HF LlamaConfig nested under
"decoder", and `model.safetensors`, f32, HF names; written by `retro model retrofit`). The math is
that of `crates/retro-model/scripts/retro_reference.py` (a float64 numpy transcription of legacy
Megatron's Retro), rewritten batch-first in torch so that it can be timed and differentiated:

- decoder: Llama (RMSNorm, RoPE with HF rotate-half pairs (i, i + hd/2), grouped-query attention
  where query head h uses key/value head h // rep, SwiGLU MLP, tied or untied head);
- at a Retro layer (1-based `retro_layer_numbers`): y = pre_cross_attn_layernorm(h1); the first
  Retro layer runs the encoder on the neighbours against y cut into the right-aligned chunk grid
  (short first chunk zero-padded at its end); CCA: drop pad = (ns-1) % m positions, append m-1 zero
  rows, cut into l blocks of m, block j attends (no mask, no RoPE) to chunk j's k·r encoded
  neighbour tokens, put back, left-pad `pad` zero rows, cut to ns; h2 = h1 + gate · CCA;
- encoder: neighbour tokens through the decoder's embedding, `encoder_layers` pre-norm layers with
  unmasked self-attention without RoPE; layer 0 also cross-attends from each chunk's k neighbours
  to the decoder's normalised chunk states (legacy residual: added to the pre-norm stream); no
  final norm.

Usage (from the repository root, with bench/.venv/bin/python):

  retro_torch.py check [--ckpt DIR] [--fixture FILE] [--retro BIN]
      Self-check against crates/retro-model/tests/fixtures/retro_tiny_numpy.json (tolerance 1e-4):
      writes the seeded tiny checkpoint with `retro bench tiny-retro` if DIR is missing.
  retro_torch.py forward --model DIR [--batch 4] [--seq 512] [--steps 3] [--warmup 1] [--backward]
                         [--no-retrieval] [--seed 0] [--threads 2] [--dtype float32|float64] [--dump-logits F.npy] [--profile] [--json]
      The same measurement as `retro bench forward` on the same seeded inputs (`seeded_inputs`).
  retro_torch.py decode --model DIR --prompt-ids 1,2,3 [--max-new 128] [--repeats 2] [--threads 2] [--json]
      Greedy decoding as the reference generates (shared reference §5, `retro_generation.py`): the whole
      sequence re-forwarded at every step (no KV cache), one [k, r] neighbour array repeated for every chunk
      (seeded random tokens here: timing does not depend on their values). Times N tokens and 1 token.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

MASK64 = (1 << 64) - 1


class SplitMix64:
    """The generator of `retro_model::tiny::SplitMix64`."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def seeded_inputs(batch, seq, vocab, m, k, r, seed):
    """The inputs of `retro bench forward` (crates/retro-cli/src/bench.rs, `seeded_inputs`): one
    SplitMix64 stream, each id next_u64() % vocab, ids (batch, seq) then neighbours (batch, l, k, r)."""
    rng = SplitMix64(seed)
    l = -(-seq // m)
    ids = [rng.next_u64() % vocab for _ in range(batch * seq)]
    nb = [rng.next_u64() % vocab for _ in range(batch * l * k * r)]
    return (torch.tensor(ids, dtype=torch.long).reshape(batch, seq),
            torch.tensor(nb, dtype=torch.long).reshape(batch, l, k, r))


class RetroTorch:
    def __init__(self, ckpt, dtype=torch.float32):
        with open(os.path.join(ckpt, "config.json")) as f:
            self.cfg = json.load(f)
        d = self.cfg["decoder"]
        if d.get("rope_layout", "rotate_half") != "rotate_half":
            raise ValueError("checkpoints store the decoder in the rotate-half layout")
        self.d = d
        self.W = {n: t.to(dtype) for n, t in load_file(os.path.join(ckpt, "model.safetensors")).items()}
        self.dtype = dtype
        self.nh = d["num_attention_heads"]
        self.nkv = d.get("num_key_value_heads") or self.nh
        self.hd = d.get("head_dim") or d["hidden_size"] // self.nh
        self.eps = d["rms_norm_eps"]
        self.m, self.k, self.r = self.cfg["chunk_len"], self.cfg["num_neighbors"], self.cfg["retrieved_len"]
        self.retro = set(self.cfg["retro_layer_numbers"])  # 1-based
        self.gate = self.cfg["gate"]
        self.tied = d.get("tie_word_embeddings", False)
        half = self.hd // 2
        # cos/sin in float64, rounded once (as crates/retro-model/src/rope.rs does).
        inv = d["rope_theta"] ** (-torch.arange(half, dtype=torch.float64) * 2.0 / self.hd)
        ang = torch.arange(d["max_position_embeddings"], dtype=torch.float64)[:, None] * inv[None, :]
        self.cos = torch.cat([ang.cos()] * 2, -1).to(dtype)
        self.sin = torch.cat([ang.sin()] * 2, -1).to(dtype)

    def parameters(self):
        return list(self.W.values())

    def requires_grad_(self, flag=True):
        for t in self.W.values():
            t.requires_grad_(flag)

    # -- pieces ----------------------------------------------------------------------------------
    def lin(self, name, x):
        return F.linear(x, self.W[name + ".weight"])

    def norm(self, name, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.W[name + ".weight"]

    def rope(self, x):  # x (b, heads, s, hd)
        s = x.shape[2]
        cos, sin = self.cos[:s], self.sin[:s]
        half = self.hd // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def attention(self, p, x, ctx, causal=False, rope=False):
        """x (B, sq, d) attends to ctx (B, sk, d)."""
        B, sq, _ = x.shape
        sk = ctx.shape[1]
        q = self.lin(p + ".q_proj", x).view(B, sq, self.nh, self.hd).transpose(1, 2)
        k = self.lin(p + ".k_proj", ctx).view(B, sk, self.nkv, self.hd).transpose(1, 2)
        v = self.lin(p + ".v_proj", ctx).view(B, sk, self.nkv, self.hd).transpose(1, 2)
        if rope:
            q, k = self.rope(q), self.rope(k)
        rep = self.nh // self.nkv
        if rep > 1:  # query head h uses key/value head h // rep (HF repeat_kv)
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.lin(p + ".o_proj", a.transpose(1, 2).reshape(B, sq, self.nh * self.hd))

    def mlp(self, p, x):
        return self.lin(p + ".down_proj", F.silu(self.lin(p + ".gate_proj", x)) * self.lin(p + ".up_proj", x))

    # -- encoder ---------------------------------------------------------------------------------
    def encoder(self, nb, chunks):
        """nb (b, l, k, r) token ids; chunks (b·l, m, d): the decoder's normalised chunk states."""
        b, l, k, r = nb.shape
        E = self.W["model.embed_tokens.weight"]
        x = F.embedding(nb.reshape(b * l * k, r), E)
        d = x.shape[-1]
        for i in range(self.cfg["encoder_layers"]):
            p = f"model.encoder.layers.{i}"
            n = self.norm(p + ".input_layernorm", x)
            h = x + self.attention(p + ".self_attn", n, n)
            if i == 0:
                # Each of the k neighbours attends to its chunk independently; with no mask that is
                # the same as one query sequence of k·r tokens per chunk.
                y = self.norm(p + ".pre_cross_attn_layernorm", h).reshape(b * l, k * r, d)
                h = h + self.attention(p + ".cross_attn", y, chunks).reshape(b * l * k, r, d)
            x = h + self.mlp(p + ".mlp", self.norm(p + ".post_attention_layernorm", h))
        return x.reshape(b * l, k * r, d)  # no final norm

    # -- decoder ---------------------------------------------------------------------------------
    def forward(self, ids, nb=None):
        b, ns = ids.shape
        m = self.m
        l = -(-ns // m)
        if nb is not None and tuple(nb.shape) != (b, l, self.k, self.r):
            raise ValueError(f"neighbours must be {(b, l, self.k, self.r)}, got {tuple(nb.shape)}")
        E = self.W["model.embed_tokens.weight"]
        x = F.embedding(ids, E)
        d = x.shape[-1]
        pad = (ns - 1) % m
        first = ns - (l - 1) * m
        enc = None
        for i in range(self.d["num_hidden_layers"]):
            p = f"model.layers.{i}"
            n = self.norm(p + ".input_layernorm", x)
            h = x + self.attention(p + ".self_attn", n, n, causal=True, rope=True)
            if nb is not None and (i + 1) in self.retro:
                y = self.norm(p + ".pre_cross_attn_layernorm", h)
                if enc is None:
                    yc = y
                    if first < m:  # right-aligned grid: only chunk 0 is short, zero-padded at its end
                        yc = torch.cat([F.pad(y[:, :first], (0, 0, 0, m - first)), y[:, first:]], 1)
                    enc = self.encoder(nb, yc.reshape(b * l, m, d))
                q = F.pad(y[:, pad:], (0, 0, 0, m - 1)).reshape(b * l, m, d)
                out = self.attention(p + ".cross_attn", q, enc).reshape(b, l * m, d)
                out = F.pad(out, (0, 0, pad, 0))[:, :ns]
                h = h + self.gate * out
            x = h + self.mlp(p + ".mlp", self.norm(p + ".post_attention_layernorm", h))
        x = self.norm("model.norm", x)
        head = E if self.tied else self.W["lm_head.weight"]
        return F.linear(x, head)


def next_token_loss(logits, ids):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1))


# -- check against the numpy fixture -----------------------------------------------------------------
def check(args):
    if not os.path.exists(os.path.join(args.ckpt, "model.safetensors")):
        subprocess.run([args.retro, "bench", "tiny-retro", "--out", args.ckpt], check=True,
                       stdout=subprocess.DEVNULL)
    with open(args.fixture) as f:
        doc = json.load(f)
    worst = 0.0
    for dtype in (torch.float32, torch.float64):
        model = RetroTorch(args.ckpt, dtype)
        for i, case in enumerate(doc["cases"]):
            ids = torch.tensor(case["ids"])
            nb = torch.tensor(case["neighbors"]) if "neighbors" in case else None
            with torch.no_grad():
                got = model.forward(ids, nb).double()
            want = torch.tensor(case["logits"], dtype=torch.float64)
            err = (got - want).abs().max().item()
            if dtype == torch.float32:
                worst = max(worst, err)
            print(f"{str(dtype):14} case {i}: ids {tuple(ids.shape)}, neighbours "
                  f"{tuple(nb.shape) if nb is not None else None}: max |torch - numpy| = {err:.2e} "
                  f"(logits up to {want.abs().max().item():.1f})")
    ok = worst < 1e-4
    print(f"float32 worst {worst:.2e}: {'OK' if ok else 'FAIL'} (tolerance 1e-4)")
    return 0 if ok else 1


# -- timed forward / backward --------------------------------------------------------------------------
def write_npy(path, array):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.save(path, array)


def forward(args):
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model = RetroTorch(args.model, getattr(torch, args.dtype))
    if args.backward:
        model.requires_grad_(True)
    load_s = time.perf_counter() - t
    c = model.cfg
    ids, nb = seeded_inputs(args.batch, args.seq, model.d["vocab_size"], c["chunk_len"],
                            c["num_neighbors"], c["retrieved_len"], args.seed)
    nb = None if args.no_retrieval else nb

    def step():
        if args.backward:
            for w in model.parameters():
                w.grad = None
            logits = model.forward(ids, nb)
            loss = next_token_loss(logits, ids)
            loss.backward()
            return logits, loss
        with torch.inference_mode():
            return model.forward(ids, nb), None

    step_ms, loss_value, with_grad = [], None, None
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        logits, loss = step()
        if i >= args.warmup:
            step_ms.append((time.perf_counter() - t) * 1e3)
        if i == 0:
            if loss is not None:
                loss_value = loss.item()
                with_grad = sum(w.grad is not None for w in model.parameters())
            if args.dump_logits:
                write_npy(args.dump_logits, logits.detach().float().numpy())
        del logits, loss
    profile = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU]) as p:
            step()
        profile = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)
    report = {
        "batch": args.batch, "seq": args.seq, "backward": args.backward, "retrieval": not args.no_retrieval,
        "steps": args.steps, "warmup": args.warmup, "load_s": load_s, "step_ms": step_ms,
        "ms_per_step": sum(step_ms) / max(len(step_ms), 1), "best_ms": min(step_ms) if step_ms else None,
        "loss": loss_value, "params_with_grad": with_grad if args.backward else None,
        "params": len(model.W) if args.backward else None, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if profile:
        print(profile, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.batch} x {args.seq} tokens, {'forward + backward' if args.backward else 'forward'}"
              f"{'' if nb is not None else ', no retrieval'}: {report['ms_per_step']:.1f} ms per step "
              f"(best {report['best_ms']:.1f}) over {args.steps} steps; load {load_s:.2f} s")
        if loss_value is not None:
            print(f"loss {loss_value:.4f}, gradients for {with_grad} of {len(model.W)} parameters")
    return 0


def decode(args):
    torch.set_num_threads(args.threads)
    model = RetroTorch(args.model)
    prompt = [int(x) for x in args.prompt_ids.split(",")]
    _, nb = seeded_inputs(1, model.m, model.d["vocab_size"], model.m, model.k, model.r, args.seed)
    one = nb[0, 0]  # (k, r), repeated for every chunk as the reference does

    def generate(n):
        seq = list(prompt)
        with torch.inference_mode():
            for _ in range(n):
                l = -(-len(seq) // model.m)
                logits = model.forward(torch.tensor([seq]), one.expand(1, l, model.k, model.r))
                seq.append(int(logits[0, -1].argmax()))
        return seq[len(prompt):]

    generate(2)  # warm-up
    times = {args.max_new: [], 1: []}
    for _ in range(args.repeats):
        for n in (args.max_new, 1):
            t = time.perf_counter()
            generate(n)
            times[n].append(time.perf_counter() - t)
    best_n, best_1 = min(times[args.max_new]), min(times[1])
    report = {"prompt_len": len(prompt), "new_tokens": args.max_new, "seconds": times[args.max_new],
              "seconds_1": times[1], "best_s": best_n, "tokens_per_s_total": args.max_new / best_n,
              "tokens_per_s": (args.max_new - 1) / (best_n - best_1), "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.max_new} tokens after a {len(prompt)}-token prompt, full re-forward per step: "
              f"{best_n:.2f} s, {report['tokens_per_s']:.1f} tokens/s over the steps after the first")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the numpy fixture of the tiny Retro model")
    c.add_argument("--ckpt", default="bench/out/tiny-retro")
    c.add_argument("--fixture", default="crates/retro-model/tests/fixtures/retro_tiny_numpy.json")
    c.add_argument("--retro", default="target/release/retro")
    f = sub.add_parser("forward", help="time forward (and backward) on seeded inputs")
    f.add_argument("--model", required=True)
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--seq", type=int, default=512)
    f.add_argument("--steps", type=int, default=3)
    f.add_argument("--warmup", type=int, default=1)
    f.add_argument("--backward", action="store_true")
    f.add_argument("--no-retrieval", action="store_true")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    f.add_argument("--dump-logits", help="write the first step's logits as float32 .npy (batch, seq, vocab)")
    f.add_argument("--profile", action="store_true", help="profile one more step (torch.profiler, top ops)")
    f.add_argument("--profile-rows", type=int, default=15)
    f.add_argument("--json", action="store_true")
    g = sub.add_parser("decode", help="time greedy decoding the reference's way (full re-forward per step)")
    g.add_argument("--model", required=True)
    g.add_argument("--prompt-ids", required=True)
    g.add_argument("--max-new", type=int, default=128)
    g.add_argument("--repeats", type=int, default=2)
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.exit({"check": check, "forward": forward, "decode": decode}[args.cmd](args))


if __name__ == "__main__":
    main()
