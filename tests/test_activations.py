import copy

import numpy as np
import pytest
import torch

from pipeline.activations import activation_stats, pooled_features, quantiles, sorted_sample
from pipeline.distributed import DistContext
from pipeline.models import compile_model, create_model
from tests.helpers import CPU


def test_statistics_of_a_known_tensor():
    values = torch.tensor([[0.0, 0.0, 0.0, 1.0], [2.0, 3.0, 4.0, 0.5]])
    stats = activation_stats(values, levels=5)
    assert stats["values"] == 8
    assert stats["zero_share"] == 3 / 8
    assert stats["above_2_share"] == 2 / 8  # 2 itself is not above 2
    assert stats["mean"] == pytest.approx(10.5 / 8)
    assert stats["std"] == pytest.approx(np.std([0, 0, 0, 1, 2, 3, 4, 0.5]))
    assert stats["cdf"]["p"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert stats["cdf"]["x"] == pytest.approx(np.quantile([0, 0, 0, 1, 2, 3, 4, 0.5], [0, 0.25, 0.5, 0.75, 1]))


def test_quantiles_match_numpy_and_large_inputs_are_subsampled():
    values = torch.rand(10_001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    levels = torch.linspace(0, 1, 17)
    assert quantiles(values.sort().values, levels).numpy() == pytest.approx(np.quantile(values.numpy(), levels))
    sample = sorted_sample(values, limit=1000)
    assert sample.numel() == 1000 and bool((sample.diff() >= 0).all())
    assert set(sample.tolist()) <= set(values.tolist())
    assert quantiles(sample, torch.tensor([0.5])).item() == pytest.approx(0.5, abs=0.05)


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        activation_stats(torch.zeros(0))


def batches(count, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, side, side, generator=g), torch.zeros(4, dtype=torch.long)) for _ in range(count)]


@pytest.mark.parametrize("name", ["resnet_tiny", "resnet18", "timm/resnet10t"])
def test_pooled_features_are_the_classifier_input(name):
    torch.manual_seed(0)
    model = create_model(name, 5).train()
    data = batches(3, 64)
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    features = pooled_features(model, data, CPU, DistContext())
    assert model.training, "the model's mode is restored"
    model.eval()
    with torch.no_grad():
        if name == "resnet_tiny":
            expected = [torch.flatten(model.pool(model.features(x)), 1) for x, _ in data]
        elif name.startswith("timm/"):
            expected = [model.forward_head(model.forward_features(x), pre_logits=True) for x, _ in data]
        else:
            trunk = torch.nn.Sequential(*list(model.children())[:-1])
            expected = [torch.flatten(trunk(x), 1) for x, _ in data]
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1] is fc, "the classifier is put back"
    assert features.shape == (12, fc.in_features)
    torch.testing.assert_close(features, torch.cat(expected))
    assert bool((features >= 0).all()), "average pooling after a ReLU"
    assert pooled_features(model, data, CPU, DistContext(), batches=2).shape[0] == 8


def test_an_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        pooled_features(create_model("resnet_tiny", 3), [], CPU, DistContext())


def test_a_model_that_does_not_end_in_its_classifier_is_refused():
    # a pooling after the last linear layer: without that layer, 12 values per image reach it, not 4
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.AdaptiveAvgPool1d(2))
    with pytest.raises(ValueError, match="does not end in its last linear layer"):
        pooled_features(model, [(torch.randn(2, 3, 2, 2), None)], CPU, DistContext())


def test_compiled_model_gives_the_eager_features_at_every_size():
    """--compile (activations, sweep --parametric): dynamo compiles the full model and the
    features at each side, in the order of a sweep (evaluate, then fit), past the side where
    it turns to dynamic shapes (the third). The "eager" backend runs dynamo's tracing and
    guards, which decide whether a cached graph is reused, without Inductor's compile time."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = create_model("resnet_tiny", 5).eval()
    compiled = copy.deepcopy(eager)
    compiled.compile(backend="eager")
    for side in (32, 40, 48, 56):
        data = batches(2, side, seed=side)
        with torch.no_grad():
            torch.testing.assert_close(compiled(data[0][0]), eager(data[0][0]))
        features = pooled_features(compiled, data, CPU, DistContext())
        torch.testing.assert_close(features, pooled_features(eager, data, CPU, DistContext()))
        assert features.shape == (8, eager.fc.in_features), side


@pytest.mark.slow
def test_inductor_compiled_model_gives_the_eager_features_at_three_sizes():
    """The same through `--compile`'s own path (compile_model: TorchInductor, the C++ compiler on
    the CPU), at three sides, each first run whole (a sweep's evaluation) and then for its
    features: the third side runs the graphs compiled with dynamic shapes."""
    torch.manual_seed(0)
    eager = create_model("resnet_tiny", 5).eval()
    compiled = compile_model(copy.deepcopy(eager))
    for side in (32, 40, 48):
        data = batches(1, side, seed=side)
        with torch.no_grad():
            torch.testing.assert_close(compiled(data[0][0]), eager(data[0][0]), rtol=1e-4, atol=1e-4)
        features = pooled_features(compiled, data, CPU, DistContext())
        torch.testing.assert_close(features, pooled_features(eager, data, CPU, DistContext()), rtol=1e-4, atol=1e-4)
