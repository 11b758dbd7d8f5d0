#!/usr/bin/env python3
"""Index train, add and search time and recall: `retro bench index` against Faiss's Python API.

Same vectors, same factory string, same training set (the first --train-n vectors), same search
parameters, same queries (the first --queries vectors), inner-product metric, 2 OpenMP threads.
The issue asks for each time to be within 5% of Faiss's (same library underneath).

recall@k = |approximate top-k ∩ exact top-k| / k, averaged over the queries, with the exact
top-k from IndexFlatIP on all vectors (the queries are database vectors, so each finds itself).

Usage (from the repository root, after `bash bench/setup.sh` and `cargo build --release`):
    bench/.venv/bin/python bench/make_chunk_texts.py --n 0
    bench/.venv/bin/python bench/make_vectors.py --texts bench/out/chunks-all.jsonl --out bench/out/vectors-all.npy
    bench/.venv/bin/python bench/index_vs_faiss_python.py --vectors bench/out/vectors-all.npy \\
        --factory IVF256_HNSW32,PQ32 --train-n all --nprobe 32 --ef-search 64
"""
import argparse
import datetime
import json
import os
import time

from run_json import run_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2


def recall_at_k(approx, exact, k):
    hits = 0
    for a, e in zip(approx[:, :k], exact[:, :k]):
        hits += len(set(a[a >= 0].tolist()) & set(e.tolist()))
    return hits / (k * len(exact))


def set_params(faiss, index, nprobe, ef_search):
    """Set nprobe and quantizer_efSearch through ParameterSpace; a parameter that does not apply
    to this index type is skipped. Returns what was set."""
    ps = faiss.ParameterSpace()
    wanted = [("nprobe", nprobe), ("quantizer_efSearch", ef_search)]
    try:
        ps.set_index_parameters(index, ",".join(f"{n}={v}" for n, v in wanted))
        return {n: v for n, v in wanted}
    except RuntimeError:
        pass
    applied = {}
    for n, v in wanted:
        try:
            ps.set_index_parameter(index, n, v)
            applied[n] = v
        except RuntimeError:
            pass
    return applied


def run_theirs(faiss, x, factory, train_n, nprobe, ef_search, xq, k, repeats):
    d = x.shape[1]
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    index.train(x[:train_n])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(x)
    add_s = time.perf_counter() - t0
    applied = set_params(faiss, index, nprobe, ef_search)
    search_s = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        _, ids = index.search(xq, k)
        search_s = min(search_s, time.perf_counter() - t0)
    return {"train_s": train_s, "add_s": add_s, "search_s": search_s}, ids, applied


def run_ours(retro, vectors, factory, train_n, nprobe, ef_search, queries, k, repeats):
    cmd = [retro, "bench", "index", "--vectors", vectors, "--factory", factory, "--train-n", str(train_n),
           "--nprobe", str(nprobe), "--ef-search", str(ef_search), "--queries", str(queries), "--k", str(k),
           "--search-repeats", str(repeats), "--json"]
    return run_json(cmd)[0], cmd


def ratio(ours, theirs):
    return ours / theirs if theirs > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", required=True, help=".npy float32 [N, d], L2-normalised")
    ap.add_argument("--factory", required=True, help="Faiss factory string, e.g. IVF256_HNSW32,PQ32 or Flat")
    ap.add_argument("--train-n", default="all", help="train on the first N vectors; 'all' or 0 = all (default)")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000, help="the first Q vectors are the queries (default 1000)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--search-repeats", type=int, default=5,
                    help="search this many times on each side and keep the fastest (default 5)")
    ap.add_argument("--retro", default=os.path.join(ROOT, "target", "release", "retro"), help="our binary (default target/release/retro)")
    ap.add_argument("--json-out", default=None, help="append the result JSON line to this file")
    a = ap.parse_args()

    import faiss
    import numpy as np
    faiss.omp_set_num_threads(THREADS)

    x = np.ascontiguousarray(np.load(a.vectors), dtype=np.float32)
    n, d = x.shape
    train_n = n if a.train_n in ("all", "0") else int(a.train_n)
    if not 0 < train_n <= n:
        raise SystemExit(f"--train-n {a.train_n}: the file has {n} vectors")
    q = min(a.queries, n)
    xq = x[:q]

    exact = faiss.IndexFlatIP(d)
    exact.add(x)
    _, gt = exact.search(xq, a.k)

    theirs, ids, applied = run_theirs(faiss, x, a.factory, train_n, a.nprobe, a.ef_search, xq, a.k, a.search_repeats)
    theirs["recall_at_k"] = recall_at_k(ids, gt, a.k)

    ours, cmd = run_ours(a.retro, a.vectors, a.factory, train_n, a.nprobe, a.ef_search, q, a.k, a.search_repeats)

    print(f"vectors: {n} x {d}  factory: {a.factory}  train-n: {train_n}  queries: {q}  k: {a.k}  "
          f"threads: {THREADS}  params set on the Python side: {applied or 'none apply'}")
    print(f"{'':12} {'faiss-python':>13} {'retro':>13} {'ours/theirs':>12}")
    for key in ("train_s", "add_s", "search_s"):
        print(f"{key:12} {theirs[key]:13.4f} {float(ours[key]):13.4f} {ratio(float(ours[key]), theirs[key]):12.3f}")
    print(f"{'recall@' + str(a.k):12} {theirs['recall_at_k']:13.4f} {float(ours['recall_at_k']):13.4f}")

    out = {
        "bench": "index",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "n": n, "d": d, "factory": a.factory, "train_n": train_n, "nprobe": a.nprobe, "ef_search": a.ef_search,
        "queries": q, "k": a.k, "search_repeats": a.search_repeats, "threads": THREADS, "faiss": faiss.__version__, "python_params_set": applied,
        "theirs": {k_: round(v, 6) for k_, v in theirs.items()},
        "ours": ours,
        "ratios": {key: round(ratio(float(ours[key]), theirs[key]), 4) for key in ("train_s", "add_s", "search_s")},
        "command": " ".join(os.path.relpath(c) if os.path.isabs(c) else c for c in cmd),
    }
    line = json.dumps(out)
    print(line)
    if a.json_out:
        with open(a.json_out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
