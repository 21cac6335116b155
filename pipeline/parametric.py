"""Parametric adaptation to a new test side (FixRes section 4.2 and appendix A), without training.

The pooled activations (all components together, as one scalar distribution) are modelled
at K_train and at K_test by a Fréchet law, the generalised extreme-value law with shape
xi > 0:

    F(x) = exp(-(1 + xi (x - mu) / sigma) ** (-1 / xi))   for 1 + xi (x - mu) / sigma > 0,

censored at zero: a pooled value is max(0, Y) with Y ~ F, so the share of exact zeros is
F(0). The paper keeps xi fixed at 0.3 and fits mu and sigma per side; `fit_frechet` does
the same by default (or fits xi too). Each pooled value x > 0 is then mapped through
x -> max(0, F_train^-1(F_test(x))), so the test-side values follow the train-side law;
zeros stay zero (a deterministic map cannot spread the mass at zero).

Fitting: maximum likelihood of the censored model (exact zeros contribute ln F(0), positive
values ln f(x)), by Newton steps on (lower end of the support, sigma / xi[, xi]) in a
parametrisation that keeps every observation inside the support. Appendix A of the paper is
not in reference/; the form above and xi = 0.3 are as summarised from it (see docs/method.md for
where this departs: the censoring at zero and the fitting method are ours).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.activations import sorted_sample
from pipeline.models import classifier_slot

PAPER_XI = 0.3


@dataclass(frozen=True)
class Frechet:
    mu: float
    sigma: float
    xi: float

    def __post_init__(self):
        if not (self.sigma > 0 and self.xi > 0):
            raise ValueError(f"a Fréchet law needs sigma > 0 and xi > 0, got {self}")

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.tail(x))

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        """-ln F(x) = (1 + xi (x - mu) / sigma) ** (-1 / xi): infinite below the support."""
        return (1 + self.xi * (x - self.mu) / self.sigma).clamp_min(0).pow(-1 / self.xi)

    def quantile(self, p: torch.Tensor) -> torch.Tensor:
        return self.mu + self.sigma * reduced_quantile(p, self.xi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, uncensored (float64)."""
        p = torch.rand(n, generator=generator, dtype=torch.float64).clamp(1e-300, 1)
        return self.quantile(p)


def reduced_quantile(p: torch.Tensor, xi: float) -> torch.Tensor:
    """The quantile of the standard law (mu 0, sigma 1)."""
    return ((-torch.log(p)).pow(-xi) - 1) / xi


def fit_frechet(values: torch.Tensor, xi: float | None = PAPER_XI) -> Frechet:
    """Maximum-likelihood mu and sigma (and xi if `xi` is None) for `values` (any shape,
    >= 0; exact zeros are the censored mass)."""
    x = sorted_sample(values)
    if x[0] < 0:
        share = (x < 0).double().mean().item()
        raise ValueError(
            f"the Fréchet model needs non-negative pooled activations (average pooling after a "
            f"ReLU); {100 * share:.1f}% of these values are negative"
        )
    positive = x[x > 0]
    zeros = x.numel() - positive.numel()
    if positive.numel() < 10 or positive[-1] == positive[0]:
        raise ValueError(f"too few distinct positive values to fit ({positive.numel()} of {x.numel()} positive)")
    # The support's lower end b = mu - sigma / xi stays below every observation (and below 0
    # when there are zeros: their probability F(0) must be positive): b = edge - exp(theta).
    edge = 0.0 if zeros else positive[0].item()
    spread = math.log(positive.std().item())

    def unpack(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, sigma / xi, xi) from the free parameters (theta, ln(sigma / xi)[, ln xi])."""
        shape = params[2].exp() if xi is None else torch.tensor(xi, dtype=torch.float64)
        return edge - params[0].exp(), params[1].exp(), shape

    def nll(params: torch.Tensor) -> torch.Tensor:
        b, scale, shape = unpack(params)
        # With z = (x - b) / scale: -ln F = z ** (-1/xi), ln f = ln F - ln(xi scale) - (1 + 1/xi) ln z.
        log_z = torch.log(positive - b) - scale.log()
        total = (torch.exp(-log_z / shape) + (shape * scale).log() + (1 + 1 / shape) * log_z).sum()
        if zeros:
            total = total + zeros * torch.exp(-(torch.log(-b) - scale.log()) / shape)
        return total / x.numel()

    start = torch.tensor([spread, spread] + ([math.log(PAPER_XI)] if xi is None else []), dtype=torch.float64)
    b, scale, shape = (v.item() for v in unpack(newton_minimum(nll, start)))
    return Frechet(mu=b + scale, sigma=scale * shape, xi=shape)


def fit_distance(values: torch.Tensor, law: Frechet) -> float:
    """Kolmogorov distance between the values' empirical CDF and the law censored at zero:
    the largest gap over the positive values and at 0 (share of zeros against F(0))."""
    x = sorted_sample(values)
    n = x.numel()
    model = law.cdf(x)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n  # the empirical CDF at each value
    positive = x > 0
    gaps = torch.maximum(above - model, model - (above - 1 / n))[positive]
    zero_gap = abs((~positive).double().mean().item() - law.cdf(torch.tensor(0.0, dtype=torch.float64)).item())
    return max(gaps.max().item() if gaps.numel() else 0.0, zero_gap)


def newton_minimum(loss, start: torch.Tensor, steps: int = 200, tolerance: float = 1e-10) -> torch.Tensor:
    """A local minimum of a smooth function of a few parameters: Newton steps (gradient
    steps where the Hessian is not positive definite), halved until the loss decreases."""
    params = start
    value = loss(params)
    for _ in range(steps):
        gradient = torch.autograd.functional.jacobian(loss, params)
        hessian = torch.autograd.functional.hessian(loss, params)
        direction = -gradient
        if torch.linalg.eigvalsh(hessian).min() > 0:
            direction = -torch.linalg.solve(hessian, gradient)
        for _ in range(60):
            trial = params + direction
            trial_value = loss(trial)
            if torch.isfinite(trial_value) and trial_value <= value:
                break
            direction = direction / 2
        else:
            break  # no decrease along the direction: a minimum to working precision
        params, converged = trial, (value - trial_value) < tolerance * (1 + abs(value))
        value = trial_value
        if converged and direction.abs().max() < 1e-6:
            break
    if not torch.isfinite(value):
        raise ValueError("the Fréchet fit did not converge on these values")
    return params.detach()


def equalize(x: torch.Tensor, test: Frechet, train: Frechet) -> torch.Tensor:
    """max(0, F_train^-1(F_test(x))) for x > 0, 0 for x = 0. Computed through -ln F, so that
    values deep in the tail keep their order instead of saturating at F = 1."""
    s = test.tail(x.double()).pow(-train.xi)  # (-ln F_test(x)) ** -xi_train
    mapped = (train.mu + train.sigma * (s - 1) / train.xi).clamp_min(0)
    return torch.where(x > 0, mapped, 0.0).to(x.dtype)


class Equalize(nn.Module):
    """The equalisation as a layer, placed right before the classifier."""

    def __init__(self, test: Frechet, train: Frechet):
        super().__init__()
        self.test_law, self.train_law = test, train

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return equalize(x, self.test_law, self.train_law)

    def extra_repr(self) -> str:
        return f"test={asdict(self.test_law)}, train={asdict(self.train_law)}"


def with_equalization(model: nn.Module, test: Frechet, train: Frechet) -> nn.Module:
    """`model` with Equalize(test -> train) in front of its last linear layer (the model
    itself is changed; pass a copy to keep the original)."""
    parent, child = classifier_slot(model)
    setattr(parent, child, nn.Sequential(Equalize(test, train), getattr(parent, child)))
    return model
