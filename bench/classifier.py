"""The reply classifier: precision and recall on the labelled table, and its speed.

Reads tests/data/replies.tsv (real-looking SMS replies in French, Arabic, Darija in both scripts
and English, half of them ordinary replies and near-misses), classifies each with
:func:`stopsms.domain.keywords.read_reply`, and prints per intent the precision and the recall
(OPT_OUT counts STOP ALL too: both stop marketing), the misses by language, and the cost per
reply against a bare loop that only normalises the text (the raw baseline).

Goals (the citizens issue): OPT_OUT recall ≥ 0.97 with precision ≥ 0.99; OPT_IN precision 1.0.
The rules were written with this table in view, so these are figures on known data. A held-out
table (tests/data/replies_heldout.tsv, written after the rules, partly from people's own texts in
the Darija Open Dataset, and never used to tune them) is measured apart: its figures are the
fairer estimate. docs/classifier.md keeps each held-out set's first figures. New forms found in
the field go into the first table.

    python -m bench.classifier
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

from bench.results import figure, record
from stopsms.domain.keywords import (
    HELP,
    NONE,
    OPT_IN,
    OPT_OUT,
    OPT_OUT_ALL,
    normalise_text,
    read_reply,
)

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TABLE, HELD_OUT = DATA / "replies.tsv", DATA / "replies_heldout.tsv"
INTENTS = {
    "OPT_OUT": OPT_OUT,
    "OPT_OUT_ALL": OPT_OUT_ALL,
    "OPT_IN": OPT_IN,
    "HELP": HELP,
    "NONE": NONE,
}
#: Both stop marketing: an opt-out read as STOP ALL (or the reverse) still stops it.
STOPS = {OPT_OUT, OPT_OUT_ALL}


def load(path: Path = TABLE) -> list[tuple[str, str, int, str]]:
    """(text, sender, expected intent, language) of every labelled reply."""
    with path.open(newline="") as table:
        lines = (line for line in table if not line.startswith("#"))
        return [(t, s, INTENTS[e], lang) for t, s, e, lang, _ in csv.reader(lines, delimiter="\t")]


def scores(pairs: list[tuple[int, int]], positive: set[int]) -> tuple[float, float]:
    """Precision and recall of ``positive`` over (expected, read) pairs."""
    tp = sum(1 for e, r in pairs if e in positive and r in positive)
    predicted = sum(1 for _, r in pairs if r in positive)
    actual = sum(1 for e, _ in pairs if e in positive)
    return (tp / predicted if predicted else 1.0), (tp / actual if actual else 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="passes over the table, for speed")
    args = parser.parse_args()
    rows = load()
    pairs = [(expected, read_reply(text, sender).intent) for text, sender, expected, _ in rows]
    misses = Counter(lang for (_, _, e, lang), (_, r) in zip(rows, pairs, strict=True) if e != r)

    started = time.process_time()
    for _ in range(args.rounds):
        for text, sender, _, _ in rows:
            read_reply(text, sender)
    per_reply = (time.process_time() - started) / (args.rounds * len(rows))
    started = time.process_time()
    for _ in range(args.rounds):
        for text, _, _, _ in rows:
            normalise_text(text)
    bare = (time.process_time() - started) / (args.rounds * len(rows))

    out_precision, out_recall = scores(pairs, STOPS)
    in_precision, in_recall = scores(pairs, {OPT_IN})
    held_out = load(HELD_OUT)
    held_pairs = [(e, read_reply(text, sender).intent) for text, sender, e, _ in held_out]
    held_precision, held_recall = scores(held_pairs, STOPS)
    held_in_precision, _ = scores(held_pairs, {OPT_IN})
    for (text, _, expected, lang), (_, read) in zip(held_out, held_pairs, strict=True):
        if expected != read:
            print(f"held out, missed: {lang}: {text!r}")
    negatives = sum(1 for _, _, e, _ in rows if e in (NONE, HELP))
    print(f"{len(rows)} replies ({negatives} ordinary replies and near-misses); misses: "
          f"{dict(misses) or 'none'}")  # fmt: skip
    record(
        [
            figure("classifier_opt_out_precision", out_precision, "ratio"),
            figure("classifier_opt_out_recall", out_recall, "ratio"),
            figure("classifier_opt_in_precision", in_precision, "ratio"),
            figure("classifier_opt_in_recall", in_recall, "ratio"),
            figure("classifier_heldout_opt_out_precision", held_precision, "ratio"),
            figure("classifier_heldout_opt_out_recall", held_recall, "ratio"),
            figure("classifier_heldout_opt_in_precision", held_in_precision, "ratio"),
            figure("classifier_us_per_reply", per_reply * 1e6, "µs", bare * 1e6),
        ]
    )


if __name__ == "__main__":
    main()
