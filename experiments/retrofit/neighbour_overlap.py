"""How much of what the decoder must predict is in its neighbours? (issue 4: "find out why", neighbour quality.)

With the causal m-1 shift (reference §3.5) the neighbours of chunk i are read by the tokens of chunk i+1. So for every
chunk i that has a next chunk in its document, this script asks which n-grams of chunk i+1 occur in the first k
neighbours of chunk i (each the neighbour chunk plus its continuation, as in training), and, as a baseline, in k
random train chunks (plus continuation) of other documents. An n-gram that is in the neighbours but nowhere earlier
in chunk i+1's own document is information the decoder can only get from retrieval ("new"). Reads the DB's arrays
directly (crates/retro-data/src/array_file.rs: a 128-byte header, then little-endian row-major elements).

    python3 experiments/retrofit/neighbour_overlap.py DB [--k 2] [--n 1 2 4 8] [--sample 4000] [--json]
"""
import argparse, json, os, random, sys

import numpy as np

HEADER = 128


def array(db, name, dtype, cols):
    raw = np.fromfile(os.path.join(db, name), dtype=np.uint8)
    if raw[:8].tobytes() != b"RETROARR":
        sys.exit(f"{db}/{name}: not a retro array file")
    return raw[HEADER:].view(dtype).reshape(-1, cols)


def overlap(db, k=2, ns=(1, 2, 4, 8), sample=4000, seed=1234):
    """The shares as a dict: {"valid"|"train": {"neighbours|random/N-gram/all|new": share}, "chunks": ...}."""
    manifest = json.load(open(os.path.join(db, "db.json")))
    m = manifest["chunk_len"]
    token_dtype = np.uint16 if manifest["token_dtype"] == "u16" else np.uint32
    tokens = array(db, "chunk-tokens.bin", token_dtype, m)
    meta = array(db, "chunk-meta.bin", np.uint32, 2)
    docs = array(db, "doc-meta.bin", np.uint64, 3)
    ids = array(db, "neighbors/ids.bin", np.int64, json.load(open(os.path.join(db, "neighbors/meta.json")))["save_k"])
    train_chunks = array(db, "train-chunks.bin", np.uint32, 1)[:, 0]

    doc_of = meta[:, 0].astype(np.int64)
    real_len = meta[:, 1].astype(np.int64)
    valid_doc = docs[:, 2] != 0

    def text(c):
        return tokens[c, : real_len[c]].tolist()

    def has_next(c):
        return c + 1 < len(tokens) and doc_of[c + 1] == doc_of[c]

    def with_continuation(c):
        return text(c) + (text(c + 1) if has_next(c) else [])

    def grams(t, n):
        return {tuple(t[j : j + n]) for j in range(len(t) - n + 1)}

    rng = random.Random(seed)
    valid = [c for c in range(len(tokens)) if valid_doc[doc_of[c]] and has_next(c)]
    train = [c for c in range(len(tokens)) if not valid_doc[doc_of[c]] and has_next(c)]
    train = rng.sample(train, min(sample, len(train)))

    def measure(chunks):
        hits = {(src, n, kind): [0, 0] for src in ("neighbours", "random") for n in ns for kind in ("all", "new")}
        for c in chunks:
            target = text(c + 1)
            first = int(docs[doc_of[c], 0])
            before = [tok for d in range(first, c + 1) for tok in text(d)]
            own = [x for x in ids[c] if x >= 0 and doc_of[x] != doc_of[c]][:k]
            rand = []
            while len(rand) < k:
                x = int(train_chunks[rng.randrange(len(train_chunks))])
                if doc_of[x] != doc_of[c]:
                    rand.append(x)
            for src, picked in (("neighbours", own), ("random", rand)):
                retrieved = [tok for x in picked for tok in with_continuation(x)]
                for n in ns:
                    t, r, b = grams(target, n), grams(retrieved, n), grams(before, n)
                    hits[(src, n, "all")][0] += len(t & r)
                    hits[(src, n, "all")][1] += len(t)
                    hits[(src, n, "new")][0] += len((t & r) - b)
                    hits[(src, n, "new")][1] += len(t)
        return {f"{src}/{n}-gram/{kind}": h[0] / max(h[1], 1) for (src, n, kind), h in hits.items()}

    return {"db": db, "k": k, "n": list(ns), "chunks": {"valid": len(valid), "train": len(train)},
            "valid": measure(valid), "train": measure(train)}


def table(result):
    """The result as a Markdown table, one row per split and n-gram length."""
    rows = ["| split | n-gram | in neighbours | in random chunks | in neighbours, new | in random chunks, new |",
            "|---|---|---|---|---|---|"]
    for split in ("valid", "train"):
        r = result[split]
        for n in result["n"]:
            cells = [r[f"{s}/{n}-gram/{kind}"] * 100 for kind in ("all", "new") for s in ("neighbours", "random")]
            rows.append(f"| {split} | {n} | " + " | ".join(f"{x:.1f}%" for x in cells) + " |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("db")
    p.add_argument("--k", type=int, default=2, help="neighbours per chunk, as in training (default 2)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="n-gram lengths (default 1 2 4 8)")
    p.add_argument("--sample", type=int, default=4000, help="train chunks to sample (all validation chunks are used)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = overlap(a.db, a.k, a.n, a.sample, a.seed)
    if a.json:
        print(json.dumps(result))
        return
    print(f"DB {a.db}: share of the next chunk's distinct n-grams found in the first {a.k} neighbours of a chunk (each "
          f"+ continuation) vs {a.k} random train chunks; 'new' = not earlier in the chunk's own document")
    print(f"chunks: {result['chunks']['valid']} validation, {result['chunks']['train']} train (sampled)\n")
    print(table(result))


if __name__ == "__main__":
    main()
