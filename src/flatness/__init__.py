"""flatness: a reproducibility-study pipeline for loss-landscape claims in deep learning."""

__version__ = "0.1.0"
