"""One BLAS thread for the small numpy/scipy calls inside the measures, at little cost.

numpy/scipy's OpenBLAS threads fight torch's threads on few cores (a Lanczos step took ~2x longer
until the pool was limited; environment.md), so the tridiagonal eigensolves, Keskar's least squares
and L-BFGS-B run with one BLAS thread. ``threadpoolctl.threadpool_limits(1)`` rescans every loaded
library on each use: 8.5 ms a call here, against 0.2 ms for the 30 x 30 tridiagonal eigensolve it
guards, once per Lanczos step (about 1.3 s of a 15k-parameter model's 1.6 s of Hessian measures).
A controller built once and limited to the BLAS pools costs 0.5 ms a call, and leaves torch's own
OpenMP threads alone.
"""

from __future__ import annotations

import functools

from threadpoolctl import ThreadpoolController


@functools.cache
def _blas_pools():
    return ThreadpoolController().select(user_api="blas")


def one_blas_thread():
    """A context manager: numpy/scipy BLAS on one thread inside it."""
    return _blas_pools().limit(limits=1)
