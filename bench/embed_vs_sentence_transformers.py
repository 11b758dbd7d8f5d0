#!/usr/bin/env python3
"""Embedding throughput: `retro bench embed` against sentence-transformers on PyTorch (CPU).

Same model directory, same texts, same batch size, same thread count, one timed run each.
Both sides are warmed up once on a few texts first. The sentence-transformers side times
`model.encode` only (model already loaded); our side reports its own "seconds" (the binary's
measurement), and the wall time of the whole process (model load included) is shown beside it.

Prints both throughputs, the ratio ours/theirs (texts/s; the issue asks >= 1.0x, goal 1.25x) and
the min (and mean) cosine between our embeddings and theirs, then one machine-readable JSON line
(also appended to --json-out when given).

Usage (from the repository root, after `bash bench/setup.sh` and `cargo build --release`):
    bench/.venv/bin/python bench/make_chunk_texts.py --n 4096
    bench/.venv/bin/python bench/embed_vs_sentence_transformers.py --texts bench/out/chunks-4096.jsonl
"""
import argparse
import datetime
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_json import run_json  # noqa: E402
from st_common import ROOT, default_embedder, load_sentence_transformer, load_texts, st_encode  # noqa: E402

WARMUP_TEXTS = 16


# The environment as given, before st_common sets TOKENIZERS_PARALLELISM for the Python side:
# our binary runs in it (the Rust tokenizers crate reads that variable too).
ORIG_ENV = dict(os.environ)


def run_ours(retro, embedder, texts_file, batch_size, threads, out_npy):
    cmd = [retro, "bench", "embed", "--embedder", embedder, "--texts", texts_file,
           "--batch-size", str(batch_size), "--threads", str(threads), "--out-npy", out_npy, "--json"]
    report, wall = run_json(cmd, env=ORIG_ENV)
    return report, wall, cmd


def shown_command(cmd, out_npy_given):
    """The command as run, with paths relative to the current directory and a temporary
    --out-npy shown as OUT.npy."""
    shown = []
    for i, c in enumerate(cmd):
        if i > 0 and cmd[i - 1] == "--out-npy" and not out_npy_given:
            c = "OUT.npy"
        elif os.path.isabs(c):
            c = os.path.relpath(c)
        shown.append(c)
    return " ".join(shown)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default=None, help="model directory (default ../shared/data/models/minilm-l6-v2 from the repo root)")
    ap.add_argument("--texts", required=True, help="jsonl, one {\"text\": ...} per line")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retro", default=str(ROOT / "target" / "release" / "retro"), help="our binary (default target/release/retro)")
    ap.add_argument("--out-npy", default=None, help="where our binary writes its embeddings (default: a temporary file)")
    ap.add_argument("--json-out", default=None, help="append the result JSON line to this file")
    a = ap.parse_args()

    import numpy as np

    embedder = a.embedder or default_embedder()
    texts = load_texts(a.texts)
    n = len(texts)

    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmpdir:
        # --- theirs: sentence-transformers on PyTorch ---
        model = load_sentence_transformer(embedder, a.threads)
        st_encode(model, texts[:WARMUP_TEXTS], a.batch_size)  # warm-up
        t0 = time.perf_counter()
        theirs = st_encode(model, texts, a.batch_size)
        st_s = time.perf_counter() - t0
        del model

        # --- ours: retro bench embed ---
        warm_file = os.path.join(tmpdir, "warmup.jsonl")
        with open(warm_file, "w", encoding="utf-8") as f:
            for t in texts[:WARMUP_TEXTS]:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        run_ours(a.retro, embedder, warm_file, a.batch_size, a.threads, os.path.join(tmpdir, "warmup.npy"))
        out_npy = a.out_npy or os.path.join(tmpdir, "ours.npy")
        res, wall, cmd = run_ours(a.retro, embedder, a.texts, a.batch_size, a.threads, out_npy)
        ours = np.load(out_npy)

    if res.get("n_texts") != n:
        print(f"warning: ours reports n_texts={res.get('n_texts')}, the file has {n}", file=sys.stderr)
    if ours.shape != theirs.shape:
        raise SystemExit(f"shape mismatch: ours {ours.shape} ({ours.dtype}), theirs {theirs.shape}")
    if ours.dtype != np.float32:
        print(f"warning: our .npy is {ours.dtype}, expected float32", file=sys.stderr)
    ours = ours.astype(np.float32)

    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)).clip(min=1e-12)
    ours_tps = float(res["texts_per_s"])
    st_tps = n / st_s
    ratio = ours_tps / st_tps

    print(f"texts: {n}  batch size: {a.batch_size}  threads: {a.threads}  model: {os.path.relpath(embedder)}  "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}")
    print(f"ours: {shown_command(cmd, a.out_npy)}")
    print(f"sentence-transformers: {st_s:8.2f} s  {st_tps:8.1f} texts/s   (encode only)")
    print(f"retro bench embed:     {float(res['seconds']):8.2f} s  {ours_tps:8.1f} texts/s   "
          f"(its own timing; process wall {wall:.2f} s incl. load)")
    print(f"ratio ours/theirs (texts/s): {ratio:.3f}x   (issue: >= 1.0x, goal 1.25x)")
    print(f"cosine ours vs theirs: min {cos.min():.6f}  mean {cos.mean():.6f}  (argmin row {int(cos.argmin())})")

    import torch
    out = {
        "bench": "embed",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "n_texts": n, "batch_size": a.batch_size, "threads": a.threads,
        "st_seconds": round(st_s, 4), "st_texts_per_s": round(st_tps, 2),
        "ours_seconds": float(res["seconds"]), "ours_texts_per_s": ours_tps, "ours_wall_s": round(wall, 4),
        "ratio_ours_over_theirs": round(ratio, 4),
        "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "torch": torch.__version__, "command": shown_command(cmd, a.out_npy),
    }
    line = json.dumps(out)
    print(line)
    if a.json_out:
        with open(a.json_out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
