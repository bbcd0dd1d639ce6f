"""The adapters that turn the algorithms into the config-driven measure suite.

- ``settings``: the defaults of every measure block and their validation;
- ``bookkeeping``: ``MeasureRun``, one measure call's merged settings, objective, clock and counts;
- ``hessian_measures`` / ``perturbation_measures``: the per-measure callables;
- ``registry``: ``MEASURES`` (name -> callable, the norm block included) and ``RESULT_NAMES``;
- ``one_model``: ``run_suite`` on one model (subset, context, per-measure seeds, JSON);
- ``group``: ``run_group_suite`` for a group of runs, the Hessian measures stacked;
  ``group_perturbation``: local entropy and rho-sharpness stacked;
- ``density_plot``: the SLQ spectral density as a PNG.
"""
