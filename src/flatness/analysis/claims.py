"""Every claim the pipeline checks, declared once: what the paper says, how it measured it, and the
boundaries of our decision. Every verdict prints these fields.

- ``statistic``: what we compute, measured the way the paper measured it;
- ``side``: +1 when the claim says the statistic is above ``threshold``, -1 when below;
- ``threshold``: the no-effect boundary the interval must clear for "reproduced";
- ``contradict_at``: the boundary the interval must clear on the other side for "contradicted"
  (``threshold`` itself, or an equivalence margin: an effect too small to matter);
- ``paper``: the paper and its own number (from ``shared/science/claims-and-measures.md``);
- ``design_power``: P(reproduced) in the ``claims`` study's design at the paper-sized effect, from
  the power simulations of ``tests/test_calibration.py`` (None where no simulation applies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    paper: str
    statistic: str
    side: int
    threshold: float
    contradict_at: float
    design_power: float | None = None

    def describe(self) -> dict:
        return asdict(self)

    def rule(self) -> str:
        rel, other = (">", "<") if self.side > 0 else ("<", ">")
        return (
            f"reproduced if the 95% interval is {rel} {self.threshold:g}, "
            f"contradicted if it is {other} {self.contradict_at:g}"
        )


CLAIMS: dict[str, Claim] = {
    c.id: c
    for c in (
        Claim(
            "a",
            "Networks fit completely random labels (train accuracy ~1 at corruption fraction 1).",
            "Zhang et al. 2017, Table 1: 100.0% train accuracy on random labels (Inception).",
            "mean train accuracy at label-corruption fraction 1 (Student t interval over seeds)",
            +1,
            0.99,
            0.99,
            0.95,
        ),
        Claim(
            "b",
            "Time to fit the training set grows with the label-corruption fraction.",
            "Zhang et al. 2017, Fig. 1b: random labels take 'a small constant factor' longer "
            "(~3x in a CIFAR reproduction).",
            "least-squares slope of the mean log(epochs to fit) on the corruption fraction, i.e. "
            "log of the slowdown from fraction 0 to 1 (Welch t interval)",
            +1,
            0.0,
            0.1,
            1.0,
        ),
        Claim(
            "c",
            "Test error at convergence grows with the label-corruption fraction.",
            "Zhang et al. 2017, Fig. 1c: test error rises from ~0.14 (clean) to ~0.90 (chance) "
            "at fraction 1.",
            "least-squares slope of the mean test error on the corruption fraction (Welch t)",
            +1,
            0.0,
            0.02,
            1.0,
        ),
        Claim(
            "d1",
            "Without any explicit regularizer, test accuracy is far above chance.",
            "Zhang et al. 2017, Table 1: 85.75% test with no regularizer (chance 10%).",
            "mean test accuracy with every regularizer off minus chance (Student t)",
            +1,
            0.2,
            0.2,
            1.0,
        ),
        Claim(
            "d2",
            "Explicit regularizers add little to test accuracy.",
            "Zhang et al. 2017, Table 1: the best combination adds 3.56 points (89.31 vs 85.75).",
            "largest gain in mean test accuracy of a regularizer combination over none (every "
            "combination must be below the margin: intersection-union Welch t)",
            -1,
            0.05,
            0.05,
            0.99,
        ),
        Claim(
            "e1",
            "Wider networks keep generalizing: past the interpolation width the widest net is "
            "no worse.",
            "Neyshabur et al. 2015; MNIST-1D MLP without noise: 41.01% test error at width 47 "
            "(interpolates) -> 37.25% at width 300.",
            "mean test error at the widest width minus at the interpolation width (Welch t)",
            -1,
            0.01,
            0.01,
            1.0,
        ),
        Claim(
            "e2",
            "With label noise, test error vs width peaks at an intermediate width "
            "(double descent).",
            "Nakkiran et al. 2019; MNIST-1D MLP, 15% noise: 54.05% at width 47 vs 45.47% at 300.",
            "peak height: max over the interpolation width (from train accuracy) and its "
            "neighbours of min(err - best narrower, err - best wider), pooled-variance t, "
            "Bonferroni over the comparisons; a peak under 1 point counts as none",
            +1,
            0.0,
            0.01,
            0.92,
        ),
        Claim(
            "f1",
            "The spread of the final test loss across seeds shrinks as the network grows.",
            "Choromanska et al. 2015: the spread of test losses of the minima found narrows with "
            "hidden units n1 in {25..500} (Fig. 1, ~1000 runs per size).",
            "slope of log(coefficient of variation of the test loss over seeds) on log2(width) "
            "(z interval with the sampling variance of a log standard deviation)",
            -1,
            0.0,
            0.0,
            0.99,
        ),
        Claim(
            "f2",
            "The correlation between train and test loss weakens as the network grows.",
            "Choromanska et al. 2015: train/test loss correlation ~0.76 at n1=25 -> ~0.41 at "
            "n1=500.",
            "slope of Fisher z of the across-seed train/test loss correlation on log2(width) "
            "(z interval, var = 1/(n-3))",
            -1,
            0.0,
            0.0,
            0.66,
        ),
        Claim(
            "g",
            "A flatness measure predicts the generalization gap across configurations.",
            "Jiang et al. 2020: sharpness/PAC-Bayes flatness measures have the highest Kendall "
            "tau of ~40 measures (values unverified); Andriushchenko et al. 2023: adaptive "
            "sharpness tau 0.08 / 0.04 / -0.09 in modern settings.",
            "Kendall tau of configuration means with the gap on converged runs; one-sided "
            "permutation p-value, Holm-adjusted across measures",
            +1,
            0.0,
            0.0,
            0.64,
        ),
        Claim(
            "h",
            "Large-batch training finds sharper minima with worse test error.",
            "Keskar et al. 2017: LB test accuracy lower by ~0.2 (F1) to ~5 (C4) points; LB "
            "eps-sharpness 1-2 orders of magnitude larger (C1: 28.6 vs 707).",
            "mean over (width, lr) cells of converged runs of test error(large) - test "
            "error(small) and of log(lambda_max(large)/lambda_max(small)); both must be > 0 "
            "(t over cells)",
            +1,
            0.0,
            0.0,
            1.0,
        ),
        Claim(
            "dinh",
            "Rescaling ReLU layers changes sharpness but not the function.",
            "Dinh et al. 2017: sharpness can be made arbitrarily large; our check: lambda_max "
            "1.68 -> 84 at alpha = 10.",
            "smallest fold range of lambda_max over the alpha grid, among models whose logits "
            "moved by < 1e-4 (deterministic: no interval)",
            +1,
            10.0,
            10.0,
            None,
        ),
        Claim(
            "mode",
            "Solutions from different seeds are joined by a simple curve of low loss "
            "(mode connectivity).",
            "Garipov et al. 2018: train loss and accuracy nearly constant along a trained "
            "Bezier curve; Draxler et al. 2018: 'essentially no barriers'.",
            "mean over seed pairs of the trained Bezier curve's barrier above the endpoints' "
            "loss (max_t L(t) - linear interpolation of the endpoint losses, Student t)",
            -1,
            0.05,
            0.05,
            0.78,
        ),
    )
}
