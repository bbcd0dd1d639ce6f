"""The matvec and objective core: what every measure algorithm evaluates.

- ``interface``: the data, context and result types a measure takes and returns;
- ``objective``: the loss (and error) as a function of a flat parameter vector, on a private
  eval-mode copy of the model, with counted loss / gradient evaluations and seeded draws;
- ``operators``: Hessian-vector products of an objective (and an explicit-matrix operator);
- ``stacked``: the Hessians of a group of runs as one batched operator;
- ``blas``: one BLAS thread for the small numpy/scipy calls of the algorithms.
"""
