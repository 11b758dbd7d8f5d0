#!/usr/bin/env python3
"""Write the bench input: chunk-sized texts from the wiki-vital corpus, as jsonl.

Each article's `text` is cut into pieces of about 64 GPT tokens. This is a WORD-based split
(48 whitespace-separated words per piece, since English averages about 1.33 GPT tokens per word),
not the GPT-tokeniser split that `retro db chunk` does: it only has to give texts of the size and
kind that the embedder sees, and the same texts go to both sides of the benchmark. A piece never
crosses an article; an article's last piece may be shorter, as a real last chunk is.

Output: one {"text": ...} per line, the first N pieces in corpus order.

Usage (from the repository root):
    bench/.venv/bin/python bench/make_chunk_texts.py [--n 4096] [--out bench/out/chunks-4096.jsonl]
`--n 0` writes every piece of the corpus.
"""
import argparse
import gzip
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = os.path.join("..", "shared", "data", "corpus", "wiki-vital-en.jsonl.gz")
WORDS_PER_CHUNK = 48  # about 64 GPT tokens


def pieces(corpus):
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            words = json.loads(line).get("text", "").split()
            for i in range(0, len(words), WORDS_PER_CHUNK):
                yield " ".join(words[i:i + WORDS_PER_CHUNK])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=None, help=f"jsonl(.gz) with a 'text' field (default {DEFAULT_CORPUS}, from the repo root)")
    ap.add_argument("--n", type=int, default=4096, help="number of pieces; 0 = all (default 4096)")
    ap.add_argument("--out", default=None, help="output jsonl (default bench/out/chunks-N.jsonl, or chunks-all.jsonl)")
    a = ap.parse_args()

    corpus = a.corpus or str(ROOT / DEFAULT_CORPUS)
    out = Path(a.out) if a.out else ROOT / "bench" / "out" / f"chunks-{a.n if a.n > 0 else 'all'}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for text in pieces(corpus):
            if a.n > 0 and n >= a.n:
                break
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            n += 1
    if a.n > 0 and n < a.n:
        print(f"make_chunk_texts: the corpus has only {n} pieces (asked for {a.n})", file=sys.stderr)
    os.replace(tmp, out)
    print(f"make_chunk_texts: wrote {n} texts to {os.path.relpath(out)}")


if __name__ == "__main__":
    main()
