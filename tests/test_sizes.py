import pytest

from pipeline.sizes import ConstantSize, LinearRamp, Step


def test_constant_plan_covers_every_sample_once_in_eval():
    plan = ConstantSize(64, 10).plan(epoch=0, num_samples=25, drop_last=False)
    assert [s.batch_size for s in plan] == [10, 10, 5]
    assert {s.res for s in plan} == {64}


def test_constant_plan_drops_partial_batch_in_training():
    assert ConstantSize(64, 10).plan(0, 25, drop_last=True) == [Step(64, 10), Step(64, 10)]


def test_ramp_goes_from_start_to_end_in_multiples_of_step():
    ramp = LinearRamp(start_res=128, end_res=192, start_epoch=2, end_epoch=6, batch_size=8, step=32)
    sides = [ramp.res_at(e) for e in range(9)]
    assert sides[:3] == [128, 128, 128]
    assert sides[6:] == [192, 192, 192]
    assert all(s % 32 == 0 for s in sides)
    assert sides == sorted(sides)
    assert ramp.plan(4, 16, drop_last=True) == [Step(160, 8), Step(160, 8)]


def test_ramp_with_custom_step():
    ramp = LinearRamp(64, 96, 0, 4, 4, step=8)
    assert [ramp.res_at(e) for e in range(5)] == [64, 72, 80, 88, 96]


@pytest.mark.parametrize("res,bs", [(0, 8), (-32, 8), (64, 0), (64, -1), (64.5, 8)])
def test_bad_values_name_the_value(res, bs):
    with pytest.raises(ValueError, match=str(res) if not isinstance(res, int) or res <= 0 else str(bs)):
        ConstantSize(res, bs)


def test_bad_ramp_epochs():
    with pytest.raises(ValueError, match="ramp epochs"):
        LinearRamp(64, 128, 5, 2, 8)


# --- MixSize -----------------------------------------------------------------------------

from pipeline.sizes import MixSize  # noqa: E402


def test_b_plus_sees_every_image_once_and_keeps_cost_per_step():
    policy = MixSize((48, 64, 96), (1, 2, 1), batch_size=32, mode="B+", ref_size=64, seed=1)
    plan = policy.plan(epoch=0, num_samples=1000, drop_last=True)
    assert sum(s.batch_size for s in plan) == 1000  # every image exactly once, remainder included
    assert {s.res for s in plan} == {48, 64, 96}
    for step in plan[:-1]:
        assert step.batch_size == round(32 * (64 / step.res) ** 2)
        # B x S^2 within rounding of B0 x S0^2 (half an image at side S)
        assert abs(step.batch_size * step.res**2 - 32 * 64**2) <= 0.5 * step.res**2
    assert all(s.copies == 1 for s in plan)


def test_d_plus_keeps_b0_distinct_images_with_copies():
    policy = MixSize((32, 48, 64), (1, 1, 1), batch_size=8, mode="D+", seed=0)
    plan = policy.plan(0, 200, drop_last=True)
    assert all(s.unique == 8 for s in plan) and sum(s.unique for s in plan) == 200
    copies = {s.res: s.copies for s in plan}
    assert copies == {32: 4, 48: 2, 64: 1}  # round((64/S)^2)
    assert all(s.batch_size == 8 * s.copies for s in plan)


def test_plan_is_a_function_of_seed_and_epoch():
    a = MixSize((48, 64, 96), (1, 1, 1), 16, seed=3)
    b = MixSize((48, 64, 96), (1, 1, 1), 16, seed=3)
    assert a.plan(5, 777, True) == b.plan(5, 777, True)
    assert a.plan(5, 777, True) != a.plan(6, 777, True)
    assert a.plan(5, 777, True) != MixSize((48, 64, 96), (1, 1, 1), 16, seed=4).plan(5, 777, True)


def test_weights_shape_the_mix():
    plan = MixSize((48, 96), (3, 1), batch_size=16, mode="D+", seed=0).plan(0, 16 * 4000, True)
    share = sum(s.res == 48 for s in plan) / len(plan)
    assert 0.72 < share < 0.78


def test_around_mean_and_nominal_side():
    policy = MixSize.around(64, 16, 16, batch_size=32)
    assert policy.sizes == (32, 48, 64, 80, 96)
    assert policy.weights[2] == max(policy.weights)
    # the nominal side is that of a fixed-size epoch of the same cost
    assert abs(policy.nominal_res(0) ** 2 - policy.pixels_per_image()) < 2 * policy.nominal_res(0)
    assert MixSize((64,), (1,), 32).nominal_res(0) == 64


@pytest.mark.parametrize(
    "kwargs,named",
    [
        (dict(sizes=(64, 0), weights=(1, 1)), "size"),
        (dict(sizes=(64, 60.5), weights=(1, 1)), "60.5"),
        (dict(sizes=(64, 96), weights=(0, 0)), "weights"),
        (dict(sizes=(64, 96), weights=(1, -1)), "weights"),
        (dict(sizes=(64, 96), weights=(1,)), "1 weights for 2 sizes"),
        (dict(sizes=(64, 96), weights=(1, 1), mode="C+"), "'C\\+'"),
        (dict(sizes=(64, 512), weights=(1, 1), batch_size=1, ref_size=64), "size 512"),
    ],
)
def test_bad_mixsize_values_fail_at_start(kwargs, named):
    with pytest.raises(ValueError, match=named):
        MixSize(**{"batch_size": 32, **kwargs})
