import pytest
import torch

from pipeline.models import create_model
from pipeline.parametric import Equalize, Frechet, equalize, fit_distance, fit_frechet, with_equalization
from tests import tolerances as tol


def draws(law, n, seed=0):
    """Pooled-activation-like values: Fréchet draws censored at zero."""
    return law.sample(n, torch.Generator().manual_seed(seed)).clamp_min(0)


def zero_share(law):
    return law.cdf(torch.tensor(0.0, dtype=torch.float64)).item()


# (law, share of zeros it implies): without zeros, with some, with many (a small test side)
LAWS = [Frechet(0.5, 0.3, 0.3), Frechet(0.2, 0.5, 0.3), Frechet(0.1, 0.6, 0.3), Frechet(1.0, 0.2, 0.6)]


@pytest.mark.parametrize("law", LAWS)
def test_fit_recovers_the_parameters(law):
    """Tolerance: 3% of sigma for mu and sigma with xi fixed at the true value (the paper
    fixes it); 0.03 on xi when it is fitted too. 50,000 draws."""
    values = draws(law, 50_000)
    fixed = fit_frechet(values, xi=law.xi)
    assert fixed.xi == law.xi
    assert fixed.mu == pytest.approx(law.mu, abs=0.03 * law.sigma)
    assert fixed.sigma == pytest.approx(law.sigma, rel=0.03)
    free = fit_frechet(values, xi=None)
    assert free.xi == pytest.approx(law.xi, abs=0.03)
    assert free.mu == pytest.approx(law.mu, abs=0.05 * law.sigma)
    assert free.sigma == pytest.approx(law.sigma, rel=0.05)
    assert fit_distance(values, fixed) < 0.01 and fit_distance(values, law) < 0.01


def test_fit_distance_of_known_samples():
    law = LAWS[1]
    assert fit_distance(torch.tensor([0.0, 0.0]), law) == pytest.approx(1 - law.cdf(torch.tensor(0.0)).item())
    x = law.quantile(torch.tensor([0.5], dtype=torch.float64))  # one value at the median: gap 1/2
    assert fit_distance(x, law) == pytest.approx(0.5)


@pytest.mark.parametrize("wrong_xi", [0.15, 0.45, 0.6])
def test_fit_of_a_wrong_xi_is_worse_than_the_right_one(wrong_xi):
    """With xi fixed at a wrong value, the best mu and sigma still leave a Kolmogorov distance that
    a test at KS_ALPHA rejects for 50,000 draws; with the right xi the fit passes it."""
    law = LAWS[1]
    values = draws(law, 50_000)
    right, wrong = (fit_distance(values, fit_frechet(values, xi=xi)) for xi in (law.xi, wrong_xi))
    assert right < tol.ks_critical(len(values)) < wrong, (right, wrong)


@pytest.mark.parametrize("source,target", [(LAWS[0], LAWS[1]), (LAWS[2], LAWS[0]), (LAWS[1], LAWS[3])])
def test_equalization_sends_one_law_onto_the_other(source, target):
    x = draws(source, 100_000)
    mapped = equalize(x, source, target)
    assert bool((mapped[x == 0] == 0).all()), "zeros stay zero"
    assert bool((mapped >= 0).all())
    # every positive value is moved to its quantile under the target: the mapped sample follows
    # the target law (the 99% Kolmogorov-Smirnov bound for 100,000 draws is 0.005), except for
    # the zeros the source has in excess, which stay zero
    excess_zeros = max(0.0, zero_share(source) - zero_share(target))
    assert fit_distance(mapped, target) < 0.006 + excess_zeros
    assert fit_distance(x, target) > 0.05, "the laws differ to begin with"
    expected_zeros = max(zero_share(source), zero_share(target))
    assert (mapped == 0).double().mean().item() == pytest.approx(expected_zeros, abs=0.005)
    levels = torch.tensor([0.5, 0.75, 0.9, 0.99], dtype=torch.float64)
    assert torch.quantile(mapped.double(), levels) == pytest.approx(target.quantile(levels), rel=0.03)


def test_equalization_between_equal_laws_is_the_identity_and_keeps_the_dtype():
    law = LAWS[1]
    x = draws(law, 1000).float()
    torch.testing.assert_close(equalize(x, law, law), x)
    assert equalize(x.bfloat16(), law, law).dtype == torch.bfloat16


def test_the_layer_sits_before_the_classifier():
    torch.manual_seed(0)
    model = create_model("resnet_tiny", 4).eval()
    images = torch.randn(2, 3, 48, 48)
    test, train = Frechet(0.3, 0.4, 0.3), Frechet(0.5, 0.2, 0.3)
    with torch.no_grad():
        pooled = torch.flatten(model.pool(model.features(images)), 1)
        expected = model.fc(equalize(pooled, test, train))
        adapted = with_equalization(model, test, train)
        assert isinstance(adapted.fc[0], Equalize)
        torch.testing.assert_close(adapted(images), expected)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="negative"):
        fit_frechet(torch.tensor([-1.0, 0.5, 2.0] * 10))
    with pytest.raises(ValueError, match="too few"):
        fit_frechet(torch.zeros(100))
    with pytest.raises(ValueError, match="sigma > 0"):
        Frechet(0.0, -1.0, 0.3)
