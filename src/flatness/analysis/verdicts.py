"""Claim verdicts computed from the study table: reproduced, contradicted, or inconclusive.

One rule for every claim, so verdicts read alike (the boundaries are declared per claim in
``flatness.analysis.claims``):

- **reproduced**: the 95% interval of the claim's statistic excludes "no effect" on the claimed
  side (so a claim false at the boundary is reproduced at most 2.5% of the time);
- **contradicted**: the interval excludes the claimed effect: it lies on the other side, or inside
  the claim's equivalence margin (an effect too small to matter);
- **inconclusive**: anything else, including too little data. This is "we could not tell", never
  "the effect is absent".

The intervals are Student t / Welch / pooled-variance t intervals, z intervals with known sampling
variances, or permutation p-values with Holm's correction (``flatness.analysis.stats``); each rule's
false-positive rate and power are checked by simulation in ``tests/test_calibration.py``. Diverged
runs are left out of every statistic and counted, with the missing ones, in every verdict's ``n``.

Every verdict carries its statistic, estimate, interval, threshold, the paper's number, n and the
design power, and ``write_verdicts`` stores them as JSON:
``{"verdicts": [{claim_id, claim, verdict, summary, numbers}, ...]}``.

The claims live by topic in ``claims_zhang`` (a-d2), ``claims_width`` (e1, e2, f1, f2),
``claims_flatness`` (g, h) and ``claims_topology`` (dinh, mode); this module is their one entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from flatness.analysis._verdict_base import (
    CONTRADICTED,
    INCONCLUSIVE,
    OUTCOMES,
    REPRODUCED,
    Counts,
    Verdict,
)
from flatness.analysis.claims import CLAIMS
from flatness.analysis.claims_flatness import flatness_predicts, large_batch_sharper
from flatness.analysis.claims_topology import dinh_rescaling, mode_connectivity
from flatness.analysis.claims_width import (
    double_descent,
    losses_concentrate,
    train_test_correlation_weakens,
    wide_nets_generalize,
)
from flatness.analysis.claims_zhang import (
    accuracy_without_regularizers,
    random_labels_fitted,
    regularizers_add_little,
    test_error_grows,
    time_to_fit_grows,
)
from flatness.io import atomic_write_json

__all__ = [
    "CLAIMS",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "OUTCOMES",
    "REPRODUCED",
    "Counts",
    "Verdict",
    "accuracy_without_regularizers",
    "dinh_rescaling",
    "double_descent",
    "flatness_predicts",
    "large_batch_sharper",
    "losses_concentrate",
    "mode_connectivity",
    "random_labels_fitted",
    "regularizers_add_little",
    "test_error_grows",
    "time_to_fit_grows",
    "train_test_correlation_weakens",
    "wide_nets_generalize",
    "write_verdicts",
]


def write_verdicts(verdicts: Sequence[Verdict], path: str | os.PathLike) -> None:
    """Write ``{"verdicts": [...]}`` atomically; NaN numbers become null."""
    atomic_write_json(path, {"verdicts": [v.to_dict() for v in verdicts]})
