"""Figures: seaborn PNGs built from the pipeline's own files (tables, histories, result JSON)."""
