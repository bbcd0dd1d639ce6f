"""The numerical algorithms, written against ``core`` (operators, loss closures, flat vectors).

- ``eigen``: Lanczos extremes with per-quantity residual stops, PyHessian-style power iteration;
- ``trace``: Hutchinson and Hutch++ trace estimators;
- ``density``: stochastic Lanczos quadrature (spectral density, SLQ trace);
- ``lockstep``: eigen / Hutchinson / SLQ for a group of runs on one stacked operator;
- ``sharpness``: Keskar's L-BFGS-B search, projected ascent (rho-sharpness), average sharpness;
- ``pacbayes``: Jiang's sigma' and alpha' bisections and the PAC-Bayes bounds;
- ``entropy``: the SGLD local-entropy chain;
- ``norms``: margins, norm and path-norm measures, Fisher-Rao.
"""
