"""Two QA rows question by question: the numbers behind a hand-written reading (experiments/qa/notes-*.md).

For rows A and B on one set (answers from --out-dir, else from --archive): EM and F1 of each over the questions both
answered, how many questions only A or only B answers exactly, and the same split by retrieval (whether A's contexts
hold a gold answer string).

Usage: python3 experiments/qa/compare.py --archive experiments/qa/answers/n1000 --set nq-open-dev \
           instructretro-encoder-on instructretro-encoder-off
"""
import argparse, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from answers import answer_in_contexts, find_answers  # noqa: E402


def summary(label, pairs):
    n = len(pairs)
    if n == 0:
        return f"{label}: no questions"
    em_a = 100 * sum(a["em"] for a, _ in pairs) / n
    em_b = 100 * sum(b["em"] for _, b in pairs) / n
    f1_a = 100 * sum(a["f1"] for a, _ in pairs) / n
    f1_b = 100 * sum(b["f1"] for _, b in pairs) / n
    only_a = sum(a["em"] > 0 and b["em"] == 0 for a, b in pairs)
    only_b = sum(b["em"] > 0 and a["em"] == 0 for a, b in pairs)
    both = sum(a["em"] > 0 and b["em"] > 0 for a, b in pairs)
    return (f"{label}: n {n}; EM {em_a:.1f} vs {em_b:.1f}; F1 {f1_a:.1f} vs {f1_b:.1f}; exact only by A {only_a}, "
            f"only by B {only_b}, by both {both}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="row A (NAME, as in NAME-SET.jsonl)")
    p.add_argument("b", help="row B")
    p.add_argument("--set", required=True)
    p.add_argument("--out-dir", default="experiments/qa/out/n1000")
    p.add_argument("--archive", default=None)
    a = p.parse_args()
    rows = []
    for name in (a.a, a.b):
        results, path = find_answers(f"{name}-{a.set}", a.out_dir, a.archive)
        if results is None:
            p.error(f"no answers for {name}-{a.set} in {a.out_dir}" + (f" or {a.archive}" if a.archive else ""))
        rows.append({r["id"]: r for r in results})
    common = [i for i in rows[0] if i in rows[1]]
    pairs = [(rows[0][i], rows[1][i]) for i in common]
    print(f"A = {a.a}, B = {a.b}, set {a.set}")
    print(summary("all questions", pairs))
    hit = [(x, y) for x, y in pairs if answer_in_contexts(x)]
    miss = [(x, y) for x, y in pairs if answer_in_contexts(x) is False]
    print(summary("A's contexts hold a gold answer", hit))
    print(summary("they do not", miss))


if __name__ == "__main__":
    main()
