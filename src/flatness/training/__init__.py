"""Training: run configs in, trained runs' files out (``python -m flatness.training``).

- ``driver``: the one entry point (``run_group``; a lone run is a group of one): data splits,
  models, the engine choice, the files of each run;
- ``record``: one run's record: history, stopping rules, time-to-fit, divergence, checkpoints;
- ``checkpoint``: the one checkpoint format, and the weights-only reader of a run's torch files;
- ``reference_step``: the reference step engine (one ``nn.Module`` per run);
- ``stacked_step`` with ``stacked_forward``: the stacked engine (R runs in one vectorized loop);
- ``optimizers``: SGD and Adam over stacked weights, shared by both engines;
- ``step_inputs``: a step's learning rate and augmented batch;
- ``grouping``: which runs of a study may share one stacked loop.
"""
