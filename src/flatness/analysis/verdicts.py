"""Claim verdicts computed from the study table: reproduced, not reproduced, or inconclusive.

One rule for every claim, so verdicts read alike:

- **reproduced**: the claimed effect is there with confidence, i.e. the bootstrap CI of the
  statistic lies on the claimed side of its threshold (seed noise included: the bootstrap resamples
  seeds within each level, or configurations for correlations);
- **not reproduced**: there is enough data to test, but the CI reaches the threshold or lies on the
  wrong side (the data do not show the claim; at small scale this is a failure to show it, not a
  refutation, and the numbers say how far off it was);
- **inconclusive**: too little data to test at all (too few levels, seeds or configurations).

Every verdict carries the numbers behind it and one human sentence, and ``write_verdicts`` stores
them as JSON: ``{"verdicts": [{claim_id, claim, verdict, summary, numbers}, ...]}``.

The claims live by topic in ``claims_zhang`` (a-d), ``claims_width`` (e1, e2, f) and
``claims_flatness`` (g, h); this module is their one public entry point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from flatness.analysis._verdict_base import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Verdict,
)
from flatness.analysis.claims_flatness import flatness_predicts, large_batch_sharper
from flatness.analysis.claims_width import double_descent, losses_concentrate, wide_nets_generalize
from flatness.analysis.claims_zhang import (
    random_labels_fitted,
    regularizers_not_needed,
    test_error_grows,
    time_to_fit_grows,
)
from flatness.io import atomic_write_json

__all__ = [
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "Verdict",
    "double_descent",
    "flatness_predicts",
    "large_batch_sharper",
    "losses_concentrate",
    "random_labels_fitted",
    "regularizers_not_needed",
    "test_error_grows",
    "time_to_fit_grows",
    "wide_nets_generalize",
    "write_verdicts",
]


def write_verdicts(verdicts: Sequence[Verdict], path: str | os.PathLike) -> None:
    """Write ``{"verdicts": [...]}`` atomically; NaN numbers become null."""
    atomic_write_json(path, {"verdicts": [v.to_dict() for v in verdicts]})
