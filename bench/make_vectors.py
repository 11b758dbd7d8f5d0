#!/usr/bin/env python3
"""Embed a texts jsonl with sentence-transformers (PyTorch, CPU) and save float32 L2-normalised
vectors [n, d] as .npy: the input of bench/index_vs_faiss_python.py, made without our binary.

Usage (from the repository root):
    bench/.venv/bin/python bench/make_chunk_texts.py --n 0
    bench/.venv/bin/python bench/make_vectors.py --texts bench/out/chunks-all.jsonl --out bench/out/vectors-all.npy
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_common import default_embedder, load_sentence_transformer, load_texts, st_encode  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default=None, help="model directory (default ../shared/data/models/minilm-l6-v2 from the repo root)")
    ap.add_argument("--texts", required=True, help="jsonl, one {\"text\": ...} per line")
    ap.add_argument("--out", required=True, help="output .npy, float32 [n, d]")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np
    texts = load_texts(a.texts)
    model = load_sentence_transformer(a.embedder or default_embedder(), a.threads)
    t0 = time.perf_counter()
    e = st_encode(model, texts, a.batch_size)
    dt = time.perf_counter() - t0
    # The pipeline normalises already; normalise again in float32 so every row has norm 1 to
    # float32 precision, as inner-product search on the index expects.
    e /= np.linalg.norm(e, axis=1, keepdims=True).clip(min=1e-12)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.npy"
    np.save(tmp, e.astype(np.float32))
    os.replace(tmp, a.out)
    print(f"make_vectors: {e.shape[0]} x {e.shape[1]} float32 to {a.out} "
          f"({dt:.1f} s, {e.shape[0] / dt:.1f} texts/s)")


if __name__ == "__main__":
    main()
