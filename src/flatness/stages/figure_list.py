"""Which figures a study has, and their report categories: what the Snakefile needs to know about
the figures, kept free of plotting imports (seaborn, torch), so parsing the Snakefile, which every
cluster job does, stays cheap. ``flatness.stages.figures`` draws them."""

from __future__ import annotations

# Sources that are not a study family: the figure draws what that stage wrote; the value is the
# report category (a family figure's category is its family).
STAGES = {"reparam": "reparameterization", "landscape": "topology"}

# figure name -> the study family or stage it draws on
SOURCES: dict[str, str] = {
    "learning_curves": "random_labels",
    "corruption_sweep": "random_labels",
    "regularizers": "regularizers",
    "width": "width",
    "loss_spread": "concentration",
    "flatness_scatter": "generalization",
    "flatness_correlations": "generalization",
    "batch_size": "generalization",
    "reparam_measures": "reparam",
    "reparam_verdicts": "reparam",
    "dinh_flip": "reparam",
    "interpolation": "landscape",
    "surface_1d": "landscape",
    "surface_2d": "landscape",
    "bezier": "landscape",
    "spectral_density": "landscape",
}


def figure_names(families: set[str], stages: set[str]) -> list[str]:
    """The figures of a study with these families and these of the ``STAGES``."""
    return [name for name, source in SOURCES.items() if source in families | stages]


def category(name: str) -> str:
    """The report category of a figure: its family, or its stage's topic."""
    source = SOURCES[name]
    return STAGES.get(source, source)
