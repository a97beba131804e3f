"""95 % intervals for held-out accuracies in the training benchmark (``tools/bench_train.py``).

Each side of a repeat (the recipe, edgecls) is scored on the same held-out photos, in the same
order, and reports which it got right as a string of ``0``/``1``. From those:

- ``side_interval``: the side's accuracy with its Wilson 95 % interval (one accuracy on n photos);
- ``paired_interval``: the difference of two sides on the same photos with Newcombe's paired 95 %
  interval, which counts the photos only one side got right and so is far narrower than two
  independent intervals would suggest;
- ``pooled``: one side's hits over every repeat of a run, with its Wilson interval.

The interval formulas are the project's own (``edgecls.optimize.gate``), the ones the export's
parity gate uses.

>>> side_interval("1101")["accuracy"]
0.75
>>> paired_interval("1101", "1001")["diff_points"]
25.0
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgecls.optimize.gate import paired_difference_interval, wilson_interval  # noqa: E402


def side_interval(correct: str) -> dict:
    """Accuracy of one side on its held-out photos (``correct``: one 0/1 per photo) with a Wilson 95 % interval."""
    hits, n = correct.count("1"), len(correct)
    lo, hi = wilson_interval(hits, n)
    return {"hits": hits, "n": n, "accuracy": round(hits / n, 4) if n else None, "wilson95": [round(lo, 4), round(hi, 4)]}


def paired_interval(first: str, second: str) -> dict:
    """``first`` - ``second`` on the same photos, in points, with Newcombe's paired 95 % interval (points).

    Raises ValueError when the two were not scored on the same number of photos.
    """
    if len(first) != len(second):
        raise ValueError(f"paired sides scored {len(first)} and {len(second)} photos; they must share the held-out set")
    pairs = list(zip(first, second))
    both, only_first = pairs.count(("1", "1")), pairs.count(("1", "0"))
    only_second, neither = pairs.count(("0", "1")), pairs.count(("0", "0"))
    n = len(pairs)
    lo, hi = paired_difference_interval(both, only_first, only_second, neither)
    return {"diff_points": round(100 * (only_first - only_second) / n, 2) if n else None,
            "newcombe95_points": [round(100 * lo, 2), round(100 * hi, 2)],
            "only_first_right": only_first, "only_second_right": only_second}


def pooled(corrects: list[str]) -> dict:
    """One side's hits over several repeats (different held-out photos each), as one Wilson interval."""
    return side_interval("".join(corrects))
