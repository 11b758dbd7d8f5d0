#!/usr/bin/env python3
"""Is a slow index search a property of the index or of the process? (issue 2)

`index_vs_faiss_python.py` found the auto factory (OPQ48_384,IVF532_HNSW32,PQ48np) searching at 1.35-1.98x
Faiss's Python time in some of our processes and at parity in others, every search of a slow process slow. This
script builds the index once on each side (`retro bench index --save`, `faiss.write_index`), then searches each of
the two files from --processes fresh processes of each side (`retro bench index --load`, `faiss.read_index`), in
turn, so that both sides see the same machine state. Each process keeps the fastest of --search-repeats searches.

If the slow searches follow one file, the build differs; if they come in some processes whatever the file, it is
the process (memory placement, threads). Prints a table of every process's time, the medians and spread per
(searcher, file), the slowest and median time of each process's i-th search (is a slow process slow throughout, or
only for its first searches?), and a JSON line.

Usage (from the repository root, after `bash bench/setup.sh` and `cargo build --release -p retro-cli`):
    bench/.venv/bin/python bench/index_search_processes.py --vectors bench/out/vectors-all.npy \\
        --factory OPQ48_384,IVF532_HNSW32,PQ48np --nprobe 32 --ef-search 64 [--processes 6]
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from index_vs_faiss_python import THREADS, set_params  # noqa: E402
from run_json import run_json  # noqa: E402


def search_in_this_process(a):
    """The Python side of one measurement: read the file, set the parameters, search, print JSON."""
    import faiss
    import numpy as np
    faiss.omp_set_num_threads(THREADS)
    x = np.load(a.vectors, mmap_mode="r")
    xq = np.ascontiguousarray(x[: a.queries], dtype=np.float32)
    index = faiss.read_index(a.child_search)
    set_params(faiss, index, a.nprobe, a.ef_search)
    times = []
    for _ in range(max(1, a.search_repeats)):
        t0 = time.perf_counter()
        index.search(xq, a.k)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"search_s": min(times), "search_times_s": times}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", required=True, help=".npy float32 [N, d], L2-normalised")
    ap.add_argument("--factory", required=True)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--search-repeats", type=int, default=5)
    ap.add_argument("--processes", type=int, default=6, help="fresh processes per (searcher, file) (default 6)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "index-files"),
                    help="folder for the two index files (default bench/out/index-files)")
    ap.add_argument("--rebuild", action="store_true",
                    help="build both index files again even when --out has them (they are kept between runs; "
                         "delete them or pass this after changing --vectors or --factory)")
    ap.add_argument("--retro", default=os.path.join(ROOT, "target", "release", "retro"))
    ap.add_argument("--json-out", default=None, help="append the result JSON line to this file")
    ap.add_argument("--child-search", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_search:
        return search_in_this_process(a)

    import faiss
    import numpy as np
    faiss.omp_set_num_threads(THREADS)
    os.makedirs(a.out, exist_ok=True)
    files = {"ours": os.path.join(a.out, "built-by-retro.index"), "faiss-py": os.path.join(a.out, "built-by-python.index")}
    common = ["--nprobe", str(a.nprobe), "--ef-search", str(a.ef_search), "--queries", str(a.queries),
              "--k", str(a.k), "--search-repeats", str(a.search_repeats)]
    ours = [a.retro, "bench", "index", "--vectors", a.vectors, "--factory", a.factory] + common
    if a.rebuild or not all(os.path.exists(f) for f in files.values()):
        run_json(ours + ["--save", files["ours"], "--json"])
        x = np.load(a.vectors)
        index = faiss.index_factory(x.shape[1], a.factory, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.add(x)
        faiss.write_index(index, files["faiss-py"])
        del index, x

    theirs = [sys.executable, os.path.abspath(__file__), "--vectors", a.vectors, "--factory", a.factory] + common
    times = {(s, f): [] for s in ("ours", "faiss-py") for f in files}
    # Every search of every process, to see whether a slow process is slow throughout or only for a while.
    series = {(s, f): [] for s in ("ours", "faiss-py") for f in files}
    for _ in range(a.processes):
        for built_by, path in files.items():
            for searcher, cmd in (("ours", ours + ["--load", path, "--json"]),
                                  ("faiss-py", theirs + ["--child-search", path])):
                report = run_json(cmd)[0]
                times[(searcher, built_by)].append(report["search_s"])
                series[(searcher, built_by)].append(report["search_times_s"])

    print(f"{a.factory}, nprobe {a.nprobe}, efSearch {a.ef_search}, {a.queries} queries, k {a.k}; best of "
          f"{a.search_repeats} searches per process, {a.processes} processes per row, {THREADS} threads")
    print(f"{'searcher':<10} {'index built by':<15} {'median s':>9} {'min s':>7} {'max s':>7}  every process")
    summary = {}
    for (searcher, built_by), ts in times.items():
        med = statistics.median(ts)
        summary[f"{searcher}/{built_by}"] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "all_s": ts}
        print(f"{searcher:<10} {built_by:<15} {med:9.4f} {min(ts):7.4f} {max(ts):7.4f}  "
              + " ".join(f"{t:.4f}" for t in ts))
    print(f"\nThe i-th search of a process, slowest process's / median process's (seconds):")
    print(f"{'searcher':<10} {'index built by':<15} " + " ".join(f"{i + 1:>11}" for i in range(a.search_repeats)))
    for (searcher, built_by), runs in series.items():
        cells = []
        for i in range(a.search_repeats):
            column = [r[i] for r in runs]
            cells.append(f"{max(column):.3f}/{statistics.median(column):.3f}")
        print(f"{searcher:<10} {built_by:<15} " + " ".join(f"{c:>11}" for c in cells))
        summary[f"{searcher}/{built_by}"]["every_search_s"] = runs
    for built_by in files:
        r = summary[f"ours/{built_by}"]["median_s"] / summary[f"faiss-py/{built_by}"]["median_s"]
        print(f"ours / faiss-py on the index built by {built_by}: {r:.2f}x (medians)")
    line = json.dumps({"bench": "index_search_processes", "factory": a.factory, "nprobe": a.nprobe,
                       "ef_search": a.ef_search, "queries": a.queries, "k": a.k, "processes": a.processes,
                       "search_repeats": a.search_repeats, "results": summary})
    print(line)
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
