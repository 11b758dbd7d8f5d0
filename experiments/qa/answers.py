"""Reading a QA row's answers: the full output of `retro eval qa --out` (NAME-SET.jsonl, with contexts) or its slim
archived copy (NAME-SET.jsonl.gz from archive.py, with a precomputed answer_in_contexts)."""
import gzip, json, os

# The rows of experiments/qa/run.sh, (name, label) in table order; each row's answers are NAME-SET.jsonl.
ROWS = [
    ("smollm2-instruct-rag", "SmolLM2-135M-Instruct, untouched, RAG"),
    ("smollm2-instruct-closed-book", "SmolLM2-135M-Instruct, untouched, no contexts"),
    ("gptfit-instruct-rag", "GPT-fit-Instruct, RAG"),
    ("instructretro-encoder-off", "InstructRetro, encoder off (RAG)"),
    ("instructretro-encoder-on", "InstructRetro, encoder on (RAG)"),
    ("sft-only-rag", "SmolLM2-135M-Instruct + the same SFT, no fitting, RAG"),
]


def answer_in_contexts(r):
    """Retrieval recall for one question: a gold answer occurs (case-insensitively) in the prompt's contexts; None
    when the prompt had no contexts or the task is True/False (its answers are not spans)."""
    if "answer_in_contexts" in r:
        return r["answer_in_contexts"]
    if not r.get("contexts") or r.get("task", "short") == "boolq":
        return None
    text = " ".join(r["contexts"]).lower()
    return any(g.lower() in text for g in r["answers"])


def read_answers(path):
    """The complete lines of a .jsonl (a last line cut short by a killed run is skipped) or .jsonl.gz file."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(l) for l in f if l.endswith("\n")]


def find_answers(name, out_dir, archive=None):
    """A row's answers from the output directory, else from the archive, else None; with the file they came from."""
    for path in [os.path.join(out_dir, f"{name}.jsonl")] + ([os.path.join(archive, f"{name}.jsonl.gz")] if archive else []):
        if os.path.exists(path):
            results = read_answers(path)
            if results:
                return results, path
    return None, None
