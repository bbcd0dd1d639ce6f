"""The ``captions`` stage: report captions that carry each figure's verdict, computed from the data.

The caption text of every figure lives in ``workflow/report/<figure>.rst`` (the claim the figure
tests and how to read it). This stage reads ``verdicts.json`` (written by ``analyze``), appends the
verdicts of each figure's claims with the numbers behind them, and writes
``results/<study>/captions/<figure>.rst``, which the Snakemake report shows under the figure. The
templates are passed in as files (the ``captions`` rule's inputs), so editing one reruns the rule.

By hand: ``python -m flatness.stages.captions results/<study> workflow/report/*.rst``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from flatness.analysis.verdicts import Verdict
from flatness.config import CONF_DIR
from flatness.io import atomic_write, atomic_write_text, read_json

TEMPLATES = CONF_DIR.parent / "workflow" / "report"  # the rules pass these files in

# figure -> claim ids (prefix match: "g:" covers every measure's flatness claim)
FIGURE_CLAIMS: dict[str, tuple[str, ...]] = {
    "learning_curves": ("a",),
    "corruption_sweep": ("b", "c"),
    "regularizers": ("d1", "d2"),
    "width": ("e1", "e2"),
    "loss_spread": ("f1", "f2"),
    "flatness_scatter": ("g:",),
    "flatness_correlations": ("g:",),
    "batch_size": ("h",),
    "reparam_measures": ("dinh",),
    "reparam_verdicts": ("dinh",),
    "dinh_flip": ("dinh",),
    "bezier": ("mode",),
    "interpolation": ("mode",),
}


def _matches(claim_id: str, wanted: Sequence[str]) -> bool:
    return any(claim_id == w or (w.endswith(":") and claim_id.startswith(w)) for w in wanted)


def verdict_lines(verdicts: Sequence, wanted: Sequence[str]) -> list[str]:
    lines = []
    for v in verdicts:
        if _matches(v.claim_id, wanted):
            lines.append(f"- **{v.verdict.upper()}** ({v.claim_id}){_undecided(v)}: {v.summary}")
    return lines


def _undecided(v) -> str:
    """Inconclusive means this study could not tell, never that the effect is absent."""
    if v.verdict != "inconclusive":
        return ""
    return " -- this study is too small to decide this claim, which is neither shown nor refuted"


def reproduction_rows(verdicts: Sequence) -> pd.DataFrame:
    """One row per verdict: claim, paper and its number, our number with interval, outcome, n,
    the design's power."""
    rows = []
    for v in verdicts:
        nums = v.numbers
        est, iv, n = nums.get("estimate"), nums.get("interval"), nums.get("n", {})
        ours = "" if est is None else f"{est:.3g}"
        if iv and None not in iv:
            ours += f" [{iv[0]:.3g}, {iv[1]:.3g}]"
        power = nums.get("design_power")
        rows.append({
            "claim": v.claim_id,
            "statement": v.claim,
            "paper": nums.get("paper", ""),
            "statistic": nums.get("statistic", ""),
            "ours (95% CI)": ours or "n/a",
            "outcome": v.verdict,
            "n used/missing/diverged": f"{n.get('used', '')}/{n.get('missing', '')}/{n.get('diverged', '')}",
            "design power": "" if power is None else f"{power:.0%}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def write_reproduction_table(verdicts: Sequence, path: Path) -> Path:
    """The reproduction table as CSV (the report shows it first)."""
    table = reproduction_rows(verdicts)
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def write_captions(verdicts: Sequence, templates: Sequence[Path], out_dir: Path) -> list[Path]:
    """One caption per template: the template's text, then the verdicts of its claims."""
    templates = sorted(Path(t) for t in templates)
    for template in templates:  # every one checked before any caption is written
        if template.suffix != ".rst" or not template.is_file():
            raise ValueError(f"caption template {str(template)!r} must be an existing .rst file")
    written = []
    for template in templates:
        text = template.read_text().rstrip() + "\n"
        lines = verdict_lines(verdicts, FIGURE_CLAIMS.get(template.stem, ()))
        if lines:
            text += "\n**Verdicts computed from this study's data:**\n\n" + "\n".join(lines) + "\n"
        written.append(atomic_write_text(out_dir / template.name, text))
    return written


def read_verdicts(path: Path) -> list[Verdict]:
    """The verdicts ``analyze`` wrote, back as frozen ``Verdict`` objects."""
    return [Verdict(**v) for v in read_json(path)["verdicts"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<study>")
    parser.add_argument("templates", type=Path, nargs="+", help="workflow/report/<figure>.rst")
    args = parser.parse_args(argv)
    verdicts = read_verdicts(args.results_dir / "verdicts.json")
    for path in write_captions(verdicts, args.templates, args.results_dir / "captions"):
        print(path)


if __name__ == "__main__":
    main()
