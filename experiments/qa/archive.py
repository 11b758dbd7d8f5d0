"""Keeps the answers behind a QA table in the repository: experiments/qa/run.sh writes each row's answers to an
ignored output directory (NAME-SET.jsonl, one JSON line per question, with the retrieved contexts); this writes a
slim copy of each to ARCHIVE/NAME-SET.jsonl.gz (id, task, prediction, gold answers, EM, F1 and whether a gold answer
occurs in the contexts; not the contexts themselves, which the DB gives back) and ARCHIVE/NAME-SET.run.json (the
settings the answers were made with, paths reduced to file names, and the SHA-256 of the model's weights).
experiments/qa/report.py reads the archive for the rows the output directory lacks, so a table can grow row by row
over several runs, and anyone can recompute its numbers from the committed answers.

Usage: python3 experiments/qa/archive.py --out-dir experiments/qa/out/n1000 --archive experiments/qa/answers/n1000
       python3 experiments/qa/archive.py --archive DIR --done NAME-SET --model DIR --limit N --contexts K --encoder E \
           [--data QA-FILE]
"""
import argparse, functools, glob, gzip, hashlib, json, os, sys

from answers import answer_in_contexts, read_answers


@functools.lru_cache(maxsize=None)
def weights_sha256(model):
    """One SHA-256 over a model's weight files in name order (*.safetensors, *.gguf and .gguf.partNN pieces), so
    that answers archived in one run can be matched to a model retrained in another: training is deterministic for a
    given seed, machine and thread count, and this tells whether it was. Remembered in a cache file (under
    $XDG_CACHE_HOME or ~/.cache) keyed by the files' paths, sizes and modification times, because experiments/qa/run.sh
    asks once per row, each time from a fresh process."""
    # A training run directory stands for its latest checkpoint, as it does for `retro` (resolve_checkpoint).
    if os.path.isfile(os.path.join(model, "run.json")):
        latest = os.path.join(model, "latest")
        if not os.path.isfile(latest):
            sys.exit(f"error: {model}: the training run has no checkpoint yet")
        model = os.path.join(model, "checkpoints", open(latest).read().strip())
    paths = [model] if os.path.isfile(model) else sorted(
        os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors") or ".gguf" in f)
    if not paths:
        sys.exit(f"error: {model}: no weight files (*.safetensors, *.gguf) to hash")
    key = json.dumps([[os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths])
    cache_path = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "retro",
                              "weights-sha256.json")
    try:
        cache = json.load(open(cache_path))
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    cache[key] = h.hexdigest()
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with open(cache_path + f".{os.getpid()}.tmp", "w") as f:
            json.dump(cache, f)
        os.replace(cache_path + f".{os.getpid()}.tmp", cache_path)
    except OSError:
        pass  # a cache that cannot be written only costs the hashing time next time
    return cache[key]


def questions_in(data):
    """The number of questions (non-empty lines) of a QA file, .jsonl or .jsonl.gz."""
    with (gzip.open(data, "rt") if data.endswith(".gz") else open(data)) as f:
        return sum(1 for line in f if line.strip())


def archived_row_is_done(archive, name, model, limit, contexts, encoder, data=None):
    """Whether ARCHIVE holds at least `limit` answers (all of DATA's questions when it has fewer) of row NAME made
    with these weights, contexts and encoder setting, so that experiments/qa/run.sh need not answer them again."""
    run, answers = os.path.join(archive, name + ".run.json"), os.path.join(archive, name + ".jsonl.gz")
    if not (os.path.exists(run) and os.path.exists(answers)):
        return False
    if data:
        limit = min(limit, questions_in(data))
    record = json.load(open(run))
    return (len(read_answers(answers)) >= limit and record.get("contexts") == contexts
            and record.get("encoder") == encoder and record.get("model_sha256") == weights_sha256(model))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", help="archive the answers of this output directory")
    p.add_argument("--archive", required=True)
    p.add_argument("--done", metavar="NAME", help="exit 0 when the archive already holds row NAME (NAME-SET) for "
                   "--model, --limit, --contexts and --encoder, else 1")
    p.add_argument("--model")
    p.add_argument("--limit", type=int)
    p.add_argument("--contexts", type=int)
    p.add_argument("--encoder")
    p.add_argument("--data", help="with --done: the row's QA file, for a set with fewer questions than --limit")
    a = p.parse_args()
    if a.done:
        done = archived_row_is_done(a.archive, a.done, a.model, a.limit, a.contexts, a.encoder, a.data)
        raise SystemExit(0 if done else 1)
    if not a.out_dir:
        p.error("give --out-dir (archive a run's answers) or --done (ask whether a row is archived)")
    os.makedirs(a.archive, exist_ok=True)
    for path in sorted(glob.glob(os.path.join(a.out_dir, "*.jsonl"))):
        name = os.path.basename(path)[: -len(".jsonl")]
        results = read_answers(path)
        if not results:
            continue
        slim = [{"id": r["id"], "task": r.get("task", "short"), "prediction": r["prediction"],
                 "answers": r["answers"], "em": r["em"], "f1": r["f1"],
                 "answer_in_contexts": answer_in_contexts(r)} for r in results]
        target = os.path.join(a.archive, name + ".jsonl.gz")
        # mtime=0: the same answers give the same bytes, so rerunning this does not show up as a change in git.
        with open(target + ".tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in slim).encode())
        os.replace(target + ".tmp", target)
        run = os.path.join(a.out_dir, name + ".jsonl.run.json")
        if os.path.exists(run):
            record = json.load(open(run))
            if record.get("model") and os.path.exists(record["model"]):
                record["model_sha256"] = weights_sha256(record["model"])
            for key in ("model", "db", "data"):
                if record.get(key):
                    record[key] = os.path.basename(record[key].rstrip("/"))
            record_path = os.path.join(a.archive, name + ".run.json")
            with open(record_path + ".tmp", "w") as f:
                json.dump(record, f, indent=2)
                f.write("\n")
            os.replace(record_path + ".tmp", record_path)
        print(f"{target}: {len(slim)} answers")


if __name__ == "__main__":
    main()
