"""Benchmark of the measures on MNIST-1D MLPs (a script, not a test).

For MLPs 40-w-w-10 with about 3k, 15k and 80k parameters, briefly trained on generated MNIST-1D:

- the Hessian-vector products and seconds Lanczos and power iteration need to reach relative error
  1e-3 of the top eigenvalue (reference: a long Lanczos run to residual 1e-10), and how far
  PyHessian's own stopping rule (relative change < 1e-3) leaves power iteration;
- the same at relative error 1e-6 (power iteration capped at 1000 products);
- the time of one HVP over one gradient (gradient graph reused, and rebuilt);
- the wall time of the full default measure suite (conf/measures/default.yaml) per model.

Usage: python bench/bench_measures.py [--threads 1] [--steps 1500] [--widths 32 100 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from flatness.measures import MeasureContext, run_suite, select_subset
from flatness.measures.algorithms.eigen import lanczos_eigen, power_iteration
from flatness.measures.core.objective import Objective, generator
from flatness.measures.core.operators import HessianOperator, Operator
from flatness.models import build_mlp, count_parameters

ROOT = Path(__file__).resolve().parents[1]
REL = 1e-3
TIGHT = 1e-6  # a second, tighter target, where Lanczos' Chebyshev acceleration shows


def mnist1d():
    from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset(): it downloads

    d = make_dataset(get_dataset_args())
    x = torch.tensor(d["x"], dtype=torch.float32)
    y = torch.tensor(d["y"], dtype=torch.long)
    return x, y


def train(width: int, x, y, steps: int, seed: int = 0):
    with torch.random.fork_rng():  # keep the global RNG untouched
        torch.manual_seed(seed)
        model = build_mlp((40,), 10, depth=2, width=width)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # conf/optim/sgd.yaml
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (100,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model


def first_within(history, ref, rel=REL) -> int | None:
    for k, value in enumerate(history):
        if abs(value - ref) <= rel * abs(ref):
            return k + 1
    return None


class DiagonalOperator(Operator):
    """A diagonal spectrum (Lanczos and power iteration are invariant to the eigenbasis)."""

    def __init__(self, diag: torch.Tensor):
        super().__init__()
        self.diag, self.size, self.device, self.dtype = diag, diag.numel(), diag.device, diag.dtype

    def _matvec(self, v):
        return self.diag * v


def bench_clustered(n_starts: int, size: int = 15_000, gap: float = 0.012):
    """Ten outliers whose top two are ``gap`` apart (a clustered top, as after training)."""
    gen = torch.Generator().manual_seed(0)
    outliers = torch.tensor([1.0, 1.0 - gap, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    bulk = 0.1 * torch.rand(size - 10, generator=gen)
    op = DiagonalOperator(torch.cat([outliers, bulk]).double())
    n_lz, n_pw = [], []
    for seed in range(1, n_starts + 1):
        hist = lanczos_eigen(
            op, max_steps=300, tol=1e-12, gen=generator(seed), min_budget=0
        ).ritz_history
        n_lz.append(first_within(hist, 1.0) or 300)
        pw = power_iteration(op, max_iter=2000, tol=1e-14, gen=generator(seed))
        n_pw.append(first_within(pw.history, 1.0) or 2000)
    rule = power_iteration(op, max_iter=100, tol=1e-3, gen=generator(1))
    return sum(n_lz) / n_starts, sum(n_pw) / n_starts, rule.n_matvec, abs(rule.eigenvalues[0] - 1)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_model(width, x, y, steps, settings, n_starts):
    model = train(width, x, y, steps)
    data = select_subset(x, y, int(settings["subset_size"]), seed=0)
    obj = Objective(model, data)
    ref = lanczos_eigen(
        HessianOperator(obj), max_steps=150, tol=1e-10, gen=generator(99), min_budget=0
    ).eigenvalues[0]
    # products to reach REL, averaged over start vectors; then timed runs of that many products
    n_lz, n_pw, tight_lz, tight_pw = [], [], [], []
    for seed in range(1, n_starts + 1):
        hist = lanczos_eigen(
            HessianOperator(obj), max_steps=150, tol=1e-12, gen=generator(seed), min_budget=0
        ).ritz_history
        n_lz.append(first_within(hist, ref))
        tight_lz.append(first_within(hist, ref, TIGHT) or 150)
        pw = power_iteration(HessianOperator(obj), max_iter=1000, tol=1e-14, gen=generator(seed))
        n_pw.append(first_within(pw.history, ref) or 1000)  # 1000: not reached (a lower bound)
        tight_pw.append(first_within(pw.history, ref, TIGHT) or 1000)
    n_lz, n_pw = sum(n_lz) / n_starts, sum(n_pw) / n_starts
    op = HessianOperator(obj)
    _, t_lz = timed(lambda: lanczos_eigen(op, max_steps=round(n_lz), tol=1e-300, gen=generator(1)))
    op = HessianOperator(obj)
    _, t_pw = timed(lambda: power_iteration(op, max_iter=round(n_pw), tol=1e-300, gen=generator(1)))
    rule = power_iteration(HessianOperator(obj), max_iter=100, tol=1e-3, gen=generator(1))
    rule_err = abs(rule.eigenvalues[0] - ref) / abs(ref)
    # one HVP over one gradient
    op = HessianOperator(obj)
    v = torch.randn(obj.size, generator=generator(2), dtype=torch.float64)
    reps = 20
    _, t_grad = timed(lambda: [obj.loss_grad() for _ in range(reps)])
    _, t_hvp = timed(lambda: [op.matvec(v) for _ in range(reps)])
    op_nr = HessianOperator(obj, reuse_graph=False)
    _, t_hvp_nr = timed(lambda: [op_nr.matvec(v) for _ in range(reps)])
    # the full default suite
    suite, t_suite = timed(
        lambda: run_suite(
            model,
            data,
            settings,
            0,
            MeasureContext(init_model=build_mlp((40,), 10, depth=2, width=width)),
        )
    )
    slowest = sorted(suite.values(), key=lambda r: -r.seconds)[:3]
    return dict(
        width=width,
        tight=(sum(tight_lz) / n_starts, sum(tight_pw) / n_starts),
        params=count_parameters(model),
        lam=ref,
        n_lz=n_lz,
        t_lz=t_lz,
        n_pw=n_pw,
        t_pw=t_pw,
        rule_n=rule.n_matvec,
        rule_err=rule_err,
        ratio=t_hvp / t_grad,
        ratio_nr=t_hvp_nr / t_grad,
        t_grad=t_grad / reps,
        t_suite=t_suite,
        slowest=", ".join(f"{r.name} {r.seconds:.1f}s" for r in slowest),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1500, help="SGD steps of brief training")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 100, 256])
    parser.add_argument("--starts", type=int, default=3, help="random start vectors to average")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/measures/default.yaml"))
    x, y = mnist1d()
    rows = [bench_model(w, x, y, args.steps, settings, args.starts) for w in args.widths]
    print(
        f"\ntorch {torch.__version__}, {args.threads} thread(s), subset {settings['subset_size']},"
        f" float64, target: relative error {REL:g} of lambda_max"
    )
    head = (
        f"{'width':>5} {'params':>7} {'lam_max':>9} | {'LZ hvp':>6} {'LZ s':>6} | {'PI hvp':>6}"
        f" {'PI s':>6} {'PI/LZ':>5} | {'PI@1e-3 rule':>16} | {'hvp/grad':>8} {'rebuilt':>7}"
        f" {'grad ms':>7} | {'LZ/PI hvp @1e-6':>15} | {'suite s':>7}  slowest measures"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        pw, ratio = f"{r['n_pw']:6.1f}", f"{r['n_pw'] / r['n_lz']:5.1f}"
        print(
            f"{r['width']:5d} {r['params']:7d} {r['lam']:9.4f} | {r['n_lz']:6.1f} {r['t_lz']:6.2f} |"
            f" {pw:>6} {r['t_pw']:6.2f} {ratio:>5} | {r['rule_n']:4d} hvp, err {r['rule_err']:.1e}"
            f" | {r['ratio']:8.2f} {r['ratio_nr']:7.2f} {1e3 * r['t_grad']:7.2f} |"
            f" {r['tight'][0]:6.1f}/{r['tight'][1]:6.1f}  | {r['t_suite']:7.2f}  {r['slowest']}"
        )

    lz, pw, rule_n, rule_err = bench_clustered(args.starts)
    print(
        f"\nsynthetic clustered spectrum (P = 15000, top-two gap 1.2%, 10 outliers):"
        f" Lanczos {lz:.1f} HVPs, power iteration {pw:.1f} HVPs (ratio {pw / lz:.1f}) to"
        f" relative error {REL:g}; PyHessian's rule stops after {rule_n} HVPs at error"
        f" {rule_err:.1e}"
    )


if __name__ == "__main__":
    main()
